package redis

import (
	"context"

	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

var _ throttle.LimiterProvider = (*Store)(nil)

// OpenLimiter returns the throttle's cluster-wide state in the same Redis,
// over the store's client, under keys prefixed with namespace.
func (s *Store) OpenLimiter(_ context.Context, namespace string) (throttle.Limiter, error) {
	return redislimit.New(s.rdb, namespace)
}
