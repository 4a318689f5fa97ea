package postgres

import (
	"context"

	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/pglimit"
)

var _ throttle.LimiterProvider = (*Store)(nil)

// OpenLimiter returns the throttle's cluster-wide state in the same
// database, over the store's pool, in schema namespace.
func (s *Store) OpenLimiter(ctx context.Context, namespace string) (throttle.Limiter, error) {
	return pglimit.New(ctx, s.pool, namespace)
}
