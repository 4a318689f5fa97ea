package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestBreakerOpensAfterConsecutiveFailuresAndProbes(t *testing.T) {
	clock := &manualClock{t: time.Unix(1000, 0)}
	b := newBreaker(BreakerConfig{Failures: 3, OpenFor: time.Second, MaxOpenFor: 4 * time.Second}, clock.Now, nil)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		b.Record(false, true, false)
	}
	if b.State() != "closed" {
		t.Fatalf("opened too early: %s", b.State())
	}
	b.Record(false, false, true) // a success resets the count
	for i := 0; i < 3; i++ {
		if opened, _ := b.Record(false, true, false); opened != (i == 2) {
			t.Fatalf("failure %d reported opened=%v", i+1, opened)
		}
	}
	if opened, _ := b.Record(false, true, false); opened {
		t.Fatal("a failure while open reported a second trip")
	}
	if b.State() != "open" {
		t.Fatalf("want open, got %s", b.State())
	}
	waitCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := b.WaitPull(waitCtx); err == nil {
		t.Fatal("WaitPull returned while open")
	}
	if _, err := b.Admit(waitCtx, nil); err == nil {
		t.Fatal("Admit returned while open")
	}
	cancel()

	clock.Advance(1100 * time.Millisecond)
	if err := b.WaitPull(ctx); err != nil {
		t.Fatalf("WaitPull while half-open: %v", err)
	}
	probe, err := b.Admit(ctx, nil)
	if err != nil || !probe {
		t.Fatalf("want the probe slot, got probe=%v err=%v", probe, err)
	}
	// Only one probe at a time, but pulling goes on: the next event waits
	// in Admit, which a pause (stop) ends.
	if err := b.WaitPull(ctx); err != nil {
		t.Fatalf("WaitPull with the probe out: %v", err)
	}
	stop := make(chan struct{})
	close(stop)
	if _, err := b.Admit(ctx, stop); !errors.Is(err, errStop) {
		t.Fatalf("second probe while the first is out: %v, want errStop", err)
	}
	// Failed probe: open again, for twice as long.
	b.Record(true, true, false)
	clock.Advance(1100 * time.Millisecond)
	if b.State() != "open" {
		t.Fatalf("want open for 2s after a failed probe, got %s", b.State())
	}
	clock.Advance(time.Second)
	probe, err = b.Admit(ctx, nil)
	if err != nil || !probe {
		t.Fatalf("want probe, got %v %v", probe, err)
	}
	if _, closed := b.Record(true, false, true); !closed {
		t.Fatal("the successful probe did not report the recovery")
	}
	if b.State() != "closed" {
		t.Fatalf("successful probe should close, got %s", b.State())
	}
	if probe, err := b.Admit(ctx, nil); err != nil || probe {
		t.Fatalf("closed breaker: probe=%v err=%v", probe, err)
	}
}

func TestBreakerHoldHonoursRetryAfter(t *testing.T) {
	clock := &manualClock{t: time.Unix(1000, 0)}
	b := newBreaker(BreakerConfig{Failures: 10, OpenFor: time.Second, MaxOpenFor: time.Minute}, clock.Now, nil)
	b.Hold(5 * time.Second)
	if b.State() != "open" {
		t.Fatalf("hold should stop pulling, got %s", b.State())
	}
	clock.Advance(5 * time.Second)
	if probe, err := b.Admit(context.Background(), nil); err != nil || probe {
		t.Fatalf("after the hold a closed breaker lets everything through: %v %v", probe, err)
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	for attempt := 1; attempt <= 30; attempt++ {
		d := Backoff(attempt, time.Second, time.Minute)
		want := time.Second << min(attempt-1, 6)
		if want > time.Minute {
			want = time.Minute
		}
		if d < want/2 || d > want {
			t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, want/2, want)
		}
	}
}

func TestConfigValidateNamesKeys(t *testing.T) {
	err := Config{Concurrency: -1, LeaseTTL: time.Millisecond}.WithDefaults().Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"worker.concurrency", "worker.lease_ttl"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v lacks %s", err, want)
		}
	}
}

// scriptedHealth is a sink.HealthReporter whose judgement the test sets.
type scriptedHealth struct {
	mu      sync.Mutex
	down    bool
	changed chan struct{}
}

func (h *scriptedHealth) APIDown() (bool, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.down, h.changed
}

func (h *scriptedHealth) set(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
	close(h.changed)
	h.changed = make(chan struct{})
}

// With a reporter (the throttle) the breaker follows its judgement only:
// failures it is told about count for nothing, a Retry-After holds
// nothing, and while the API is down one event at a time passes as the
// reporter's probe.
func TestBreakerFollowsTheSinksJudgement(t *testing.T) {
	clock := &manualClock{t: time.Unix(1000, 0)}
	health := &scriptedHealth{changed: make(chan struct{})}
	b := newBreaker(BreakerConfig{Failures: 1, OpenFor: time.Second, MaxOpenFor: time.Second}, clock.Now, health)
	ctx := context.Background()
	for range 5 {
		b.Record(false, true, false)
	}
	b.Hold(time.Hour)
	if probe, err := b.Admit(ctx, nil); err != nil || probe || b.State() != "closed" {
		t.Fatalf("the breaker judged by itself: probe %v, err %v, state %s", probe, err, b.State())
	}
	if err := b.WaitPull(ctx); err != nil {
		t.Fatalf("WaitPull held: %v", err)
	}

	health.set(true)
	if s := b.State(); s != "open" {
		t.Fatalf("state %s while the reporter says down", s)
	}
	probe, err := b.Admit(ctx, nil)
	if err != nil || !probe {
		t.Fatalf("first event while down: probe %v, err %v; want the probe", probe, err)
	}
	second := make(chan bool, 1)
	go func() {
		p, err := b.Admit(ctx, nil)
		if err != nil {
			t.Error(err)
		}
		second <- p
	}()
	select {
	case <-second:
		t.Fatal("a second event passed while the probe was out")
	case <-time.After(50 * time.Millisecond):
	}
	health.set(false) // the reporter's probe succeeded
	if p := <-second; p {
		t.Fatal("the event after recovery was taken for a probe")
	}
	b.Record(true, false, true)
	if s := b.State(); s != "closed" {
		t.Fatalf("state %s after recovery", s)
	}
}
