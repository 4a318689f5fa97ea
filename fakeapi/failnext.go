package fakeapi

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// pendingFailures is what FailNext asked for: the next left /v1 requests
// answer status.
type pendingFailures struct {
	left       atomic.Int64
	status     int
	retryAfter time.Duration
}

// FailNext makes the next n /v1 requests (to a valid route) answer status
// before they do anything, with a Retry-After header of retryAfter (whole
// seconds, rounded up) when it is above 0. It is for tests that need one
// exact answer, such as a 400, a 408 or a 429 with a given Retry-After,
// where the fault rates give random ones; the answers count as injected
// errors in Stats. A call replaces the failures still pending; n <= 0
// clears them.
func (s *Server) FailNext(n, status int, retryAfter time.Duration) error {
	if n <= 0 {
		s.failNext.Store(nil)
		return nil
	}
	if status < 400 || status > 599 {
		return fmt.Errorf("fail next: status %d is not a failure; use 400 to 599", status)
	}
	if retryAfter < 0 {
		return fmt.Errorf("fail next: Retry-After %s is negative", retryAfter)
	}
	p := &pendingFailures{status: status, retryAfter: retryAfter}
	p.left.Store(int64(n))
	s.failNext.Store(p)
	return nil
}

// takeFailure claims one pending failure, if any; one atomic load when none.
func (s *Server) takeFailure() (*pendingFailures, bool) {
	p := s.failNext.Load()
	if p == nil {
		return nil, false
	}
	left := p.left.Add(-1)
	if left <= 0 {
		s.failNext.CompareAndSwap(p, nil)
	}
	return p, left >= 0
}

// failAsAsked answers a request claimed by FailNext.
func (q *v1Request) failAsAsked(p *pendingFailures) {
	q.s.counters.injected[fError].Add(1)
	if p.retryAfter > 0 {
		q.w.Header().Set("Retry-After", retryAfter(p.retryAfter))
	}
	q.fail(p.status, "injected failure (fail next): "+http.StatusText(p.status))
}
