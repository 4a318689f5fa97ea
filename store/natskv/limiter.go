package natskv

import (
	"context"

	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/natslimit"
)

var _ throttle.LimiterProvider = (*Store)(nil)

// OpenLimiter returns the throttle's cluster-wide state in a key-value
// bucket of the same NATS server, over the store's connection. Closing the
// limiter leaves that connection open.
func (s *Store) OpenLimiter(ctx context.Context, namespace string) (throttle.Limiter, error) {
	return natslimit.Open(ctx, natslimit.Config{Conn: s.nc, Bucket: namespace, Logger: s.log})
}
