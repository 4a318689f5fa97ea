package engine

import (
	"context"
	"errors"
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

// WaitPull blocks while the breaker is open: an open breaker leaves events
// in the queue. It claims nothing; Admit decides about the event pulled.
func (b *breaker) WaitPull(ctx context.Context) error {
	for {
		b.mu.Lock()
		wait := b.openUntil.Sub(b.now())
		changed := b.changed
		b.mu.Unlock()
		if wait <= 0 {
			return nil
		}
		if err := waitFor(ctx, wait, changed, nil); err != nil {
			return err
		}
	}
}

// Admit blocks until the event in hand may go to the API. probe is true
// when it is the single half-open probe; the caller must then Record its
// outcome. The probe is claimed only with an event in hand: a stream with
// nothing to send must not hold it while another stream's events wait. It
// returns errStop when stop is closed first (the stream's pause flags
// changed), and ctx's error when ctx ends.
func (b *breaker) Admit(ctx context.Context, stop <-chan struct{}) (probe bool, err error) {
	for {
		b.mu.Lock()
		wait := b.openUntil.Sub(b.now())
		tripped := b.failures >= b.cfg.Failures
		switch {
		case wait > 0:
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
		if err := waitFor(ctx, wait, changed, stop); err != nil {
			return false, err
		}
	}
}

// errStop reports that Admit's stop channel was closed.
var errStop = errors.New("engine: stream's pause flags changed")

// waitFor returns nil after d (when positive) or when changed is closed,
// errStop when stop is closed, and ctx's error when ctx ends.
func waitFor(ctx context.Context, d time.Duration, changed, stop <-chan struct{}) error {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStop
	case <-changed:
	case <-timer:
	}
	return nil
}

// Record feeds one outcome. probe says whether it was the half-open probe.
// opened and closed report a trip and a recovery, for the log.
func (b *breaker) Record(probe bool, sinkFailure, success bool) (opened, closed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if probe {
		b.probing = false
	}
	switch {
	case sinkFailure:
		b.failures++
		if b.failures >= b.cfg.Failures {
			opened = b.failures == b.cfg.Failures
			if b.openFor == 0 {
				b.openFor = b.cfg.OpenFor
			} else if probe {
				b.openFor = min(b.openFor*2, b.cfg.MaxOpenFor)
			}
			b.openUntil = b.now().Add(b.openFor)
		}
	case success:
		closed = b.failures >= b.cfg.Failures
		b.failures = 0
		b.openFor = 0
	}
	b.signal()
	return opened, closed
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
