package engine

import (
	"context"
	"sync"
	"time"
)

// breaker stops a worker from pulling events while the API is down. After
// Failures consecutive retryable sink failures it opens for OpenFor (doubling
// up to MaxOpenFor); then a single probe event is let through: success
// closes it, failure opens it again. Events stay in the queue meanwhile, so
// an outage costs no retries and no memory.
type breaker struct {
	cfg BreakerConfig
	now func() time.Time

	mu          sync.Mutex
	failures    int
	openUntil   time.Time
	openFor     time.Duration
	probing     bool
	changed     chan struct{} // closed and replaced on every state change
	holdReasons string
}

func newBreaker(cfg BreakerConfig, now func() time.Time) *breaker {
	return &breaker{cfg: cfg, now: now, changed: make(chan struct{})}
}

func (b *breaker) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// State is "closed", "open" or "half-open", for status and metrics.
func (b *breaker) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.now().Before(b.openUntil):
		return "open"
	case b.probing || b.failures >= b.cfg.Failures:
		return "half-open"
	}
	return "closed"
}

// Wait blocks until an event may be pulled. probe is true when this event
// is the single half-open probe; the caller must then call Done.
func (b *breaker) Wait(ctx context.Context) (probe bool, err error) {
	for {
		b.mu.Lock()
		now := b.now()
		tripped := b.failures >= b.cfg.Failures
		var wait time.Duration
		switch {
		case now.Before(b.openUntil):
			wait = b.openUntil.Sub(now)
		case !tripped:
			b.mu.Unlock()
			return false, nil
		case !b.probing:
			b.probing = true
			b.mu.Unlock()
			return true, nil
		}
		changed := b.changed
		b.mu.Unlock()
		var timer <-chan time.Time
		if wait > 0 {
			t := time.NewTimer(wait)
			timer = t.C
			defer t.Stop()
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-changed:
		case <-timer:
		}
	}
}

// Record feeds one outcome. probe says whether it was the half-open probe.
func (b *breaker) Record(probe bool, sinkFailure, success bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	switch {
	case sinkFailure:
		b.failures++
		if b.failures >= b.cfg.Failures {
			if b.openFor == 0 {
				b.openFor = b.cfg.OpenFor
			} else if probe {
				b.openFor = min(b.openFor*2, b.cfg.MaxOpenFor)
			}
			b.openUntil = b.now().Add(b.openFor)
		}
	case success:
		b.failures = 0
		b.openFor = 0
	}
	b.signal()
}

// Hold pauses pulling until d has passed, as asked by a Retry-After.
func (b *breaker) Hold(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if until := b.now().Add(d); until.After(b.openUntil) {
		b.openUntil = until
	}
	b.signal()
}
