package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/eventsync/eventsync/sink"
)

// breaker stops a worker from pulling events while the API is down. After
// Failures consecutive retryable sink failures it opens for OpenFor (doubling
// up to MaxOpenFor); then a single probe event is let through: success
// closes it, failure opens it again. Events stay in the queue meanwhile, so
// an outage costs no retries and no memory.
//
// When the sink judges the API's health itself (sink.HealthReporter: the
// throttle, for the whole fleet), the breaker only follows that judgement:
// tripped while the reporter says the API is down, one event at a time
// let through as the reporter's probe, no counting and no holds of its own.
// One component decides, so the two can never disagree.
type breaker struct {
	cfg    BreakerConfig
	now    func() time.Time
	health sink.HealthReporter // nil: the breaker counts failures itself

	mu          sync.Mutex
	failures    int
	openUntil   time.Time
	openFor     time.Duration
	probing     bool
	changed     chan struct{} // closed and replaced on every state change
	holdReasons string
}

func newBreaker(cfg BreakerConfig, now func() time.Time, health sink.HealthReporter) *breaker {
	return &breaker{cfg: cfg, now: now, health: health, changed: make(chan struct{})}
}

// tripped reports whether only probes may pass, and a channel closed when
// the reporter's judgement changes (nil without a reporter). b.mu is held.
func (b *breaker) tripped() (bool, <-chan struct{}) {
	if b.health != nil {
		return b.health.APIDown()
	}
	return b.failures >= b.cfg.Failures, nil
}

func (b *breaker) signal() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// State is "closed", "open" or "half-open", for status and metrics.
func (b *breaker) State() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	tripped, _ := b.tripped()
	switch {
	case b.now().Before(b.openUntil) || b.health != nil && tripped:
		return "open"
	case b.probing || tripped:
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
		if err := waitFor(ctx, wait, changed, nil, nil); err != nil {
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
		tripped, healthChanged := b.tripped()
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
		if err := waitFor(ctx, wait, changed, stop, healthChanged); err != nil {
			return false, err
		}
	}
}

// errStop reports that Admit's stop channel was closed.
var errStop = errors.New("engine: stream's pause flags changed")

// waitFor returns nil after d (when positive) or when changed or also is
// closed, errStop when stop is closed, and ctx's error when ctx ends.
func waitFor(ctx context.Context, d time.Duration, changed, stop, also <-chan struct{}) error {
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
	case <-also:
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
	// A success of a closed breaker changes nothing a waiter cares about:
	// it does not wake them (nor allocate a channel) for every event.
	changed := probe || b.failures != 0 || b.openFor != 0
	switch {
	case b.health != nil:
		// The reporter judged the call already; recovery shows there.
	case sinkFailure:
		changed = true
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
	if changed {
		b.signal()
	}
	return opened, closed
}

// Hold pauses pulling until d has passed, as asked by a Retry-After. With a
// reporter the reporter holds (for the whole fleet), not the breaker.
func (b *breaker) Hold(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.health != nil {
		return
	}
	if until := b.now().Add(d); until.After(b.openUntil) {
		b.openUntil = until
	}
	b.signal()
}
