package sink

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// ErrLocal marks a failure on this side of the API that kept a call from
// being sent: a rate limiter or state store that cannot be reached, a body
// that cannot be encoded. It says nothing about the API's health, so it
// never counts towards an event's attempts or a circuit breaker; the event
// waits and is tried again. Wrap it: fmt.Errorf("take a token: %w: %w",
// sink.ErrLocal, err).
var ErrLocal = errors.New("sink: call not sent (local failure)")

// Class is the one judgement of a finished sink call that every component
// shares (the engine's retries and breaker, the throttle's holds and
// congestion control), so they never disagree about whether the API failed.
type Class string

const (
	ClassOK          Class = "ok"
	ClassClientError Class = "client_error" // other 4xx, ErrNotFound: the API answered, permanently
	ClassRateLimited Class = "rate_limited" // 429
	ClassOverloaded  Class = "overloaded"   // 502, 503, 504
	ClassServerError Class = "server_error" // other 5xx
	ClassTimeout     Class = "timeout"      // 408, a deadline, a network timeout
	ClassTransport   Class = "transport"    // connection refused or reset, other transport errors
	ClassCanceled    Class = "canceled"     // the caller's context ended: no judgement
	ClassLocal       Class = "local"        // ErrLocal: never sent, no judgement
)

// Verdict is Classify's answer.
type Verdict struct {
	Class Class
	// RetryAfter is the delay the API asked for (a Retry-After header),
	// decoded once by the adapter into Error.RetryAfter; 0 if none.
	RetryAfter time.Duration
}

// Classify judges err, the result of a sink call made under ctx. A nil err
// is ClassOK.
func Classify(ctx context.Context, err error) Verdict {
	if err == nil {
		return Verdict{Class: ClassOK}
	}
	if errors.Is(err, ErrLocal) {
		return Verdict{Class: ClassLocal}
	}
	if errors.Is(err, ErrNotFound) {
		return Verdict{Class: ClassClientError}
	}
	var se *Error
	if errors.As(err, &se) {
		switch {
		case se.Status == http.StatusTooManyRequests:
			return Verdict{ClassRateLimited, se.RetryAfter}
		case se.Status == http.StatusBadGateway || se.Status == http.StatusServiceUnavailable || se.Status == http.StatusGatewayTimeout:
			return Verdict{ClassOverloaded, se.RetryAfter}
		case se.Status == http.StatusRequestTimeout:
			return Verdict{ClassTimeout, se.RetryAfter}
		case se.Status >= 500:
			return Verdict{ClassServerError, se.RetryAfter}
		case se.Status >= 400 || !se.Retryable:
			return Verdict{Class: ClassClientError}
		}
	}
	var netErr net.Error
	switch {
	case ctx.Err() != nil && errors.Is(err, ctx.Err()) || errors.Is(err, context.Canceled):
		return Verdict{Class: ClassCanceled}
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		return Verdict{Class: ClassTimeout}
	}
	return Verdict{Class: ClassTransport}
}

// APIFailure reports whether the class says the API is failing: the calls
// that feed a circuit breaker and count towards an event's attempts.
func (c Class) APIFailure() bool {
	switch c {
	case ClassOverloaded, ClassServerError, ClassTimeout, ClassTransport, ClassRateLimited:
		return true
	}
	return false
}

// Outage reports whether the class suggests the API is down (as opposed to
// busy): the failures after which a breaker stops pulling.
func (c Class) Outage() bool {
	return c == ClassOverloaded || c == ClassServerError || c == ClassTimeout || c == ClassTransport
}

// Retryable reports whether a call of this class may succeed when tried
// again.
func (c Class) Retryable() bool {
	return c != ClassOK && c != ClassClientError
}

// HealthReporter is implemented by a sink that judges the API's health for
// every process sharing the API (throttle.Sink does, through the state
// store's service). A worker whose sink implements it follows that one
// judgement instead of counting failures on its own: while the API is down
// it stops pulling events and lets one event at a time through, which the
// reporter uses as its probe; a Retry-After is held by the reporter, for the
// whole fleet.
type HealthReporter interface {
	// APIDown reports whether calls are held because the API is judged
	// down, and a channel that is closed at the next change of that
	// judgement.
	APIDown() (down bool, changed <-chan struct{})
}
