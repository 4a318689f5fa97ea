package throttle

import "context"

// LimiterProvider is implemented by state stores that can also keep the
// throttle's cluster-wide state, in the same service and over the same
// connection where they can. Every process that shares a store then shares
// one rate budget, one hold and one outage probe. A Limiter it returns that
// is also an io.Closer must be closed by the caller after use; closing it
// never closes the store.
type LimiterProvider interface {
	OpenLimiter(ctx context.Context, namespace string) (Limiter, error)
}
