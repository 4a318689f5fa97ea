package throttle

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testConcurrency(initial, maxInFlight int) *concurrency {
	cfg := Config{InitialLimit: initial, MaxInFlight: maxInFlight}.WithDefaults()
	return newConcurrency(cfg)
}

// fill takes n slots at now.
func fill(t *testing.T, c *concurrency, p Priority, n int, now time.Time) {
	t.Helper()
	for i := range n {
		if err := c.acquire(context.Background(), p, now); err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
}

func TestConcurrencySlowStartGrowsOnlyWhileBusy(t *testing.T) {
	c, now := testConcurrency(4, 20), time.Unix(0, 0)
	fill(t, c, Resync, 4, now)
	for range 16 { // every slot taken: each success grows by a quarter
		c.release(Resync, now, 10*time.Millisecond, signalOK)
		fill(t, c, Resync, c.Limit()-c.InFlight()[Resync], now)
	}
	for range c.Limit() {
		c.release(Resync, now, 10*time.Millisecond, signalNeutral)
	}
	if got := c.Limit(); got != 8 {
		t.Fatalf("limit after 16 busy successes in slow start = %d, want 8", got)
	}
	for range 20 { // one call at a time: the limit is not what limits
		fill(t, c, Resync, 1, now)
		c.release(Resync, now, 10*time.Millisecond, signalOK)
	}
	if got := c.Limit(); got != 8 {
		t.Fatalf("limit after idle successes = %d, want it unchanged at 8", got)
	}
}

func TestConcurrencyBoundedByMax(t *testing.T) {
	c, now := testConcurrency(4, 6), time.Unix(0, 0)
	for range 10 {
		fill(t, c, Live, c.Limit(), now)
		for range c.Limit() {
			c.release(Live, now, time.Millisecond, signalOK)
		}
	}
	if got := c.Limit(); got != 6 {
		t.Fatalf("limit = %d, want max_in_flight 6", got)
	}
}

func TestConcurrencyCutsOncePerOverload(t *testing.T) {
	c, now := testConcurrency(20, 100), time.Unix(0, 0)
	fill(t, c, Live, 20, now)
	for range 5 { // five calls failing together are one overload
		c.release(Live, now, 5*time.Millisecond, signalOverload)
	}
	if got := c.Limit(); got != 10 {
		t.Fatalf("limit after one overload episode in slow start = %d, want 20/2 = 10", got)
	}
	c.release(Live, now.Add(time.Second), 5*time.Millisecond, signalOverload)
	if got := c.Limit(); got != 9 {
		t.Fatalf("limit after a second overload = %d, want 10*0.9 = 9", got)
	}
	for range 4 { // after a cut the growth is additive (1/limit per call)
		c.release(Live, now.Add(2*time.Second), time.Millisecond, signalNeutral)
	}
	if c.slowStart {
		t.Fatal("still in slow start after a cut")
	}
}

func TestConcurrencyCutsOnLatencyBlowUp(t *testing.T) {
	c, now := testConcurrency(10, 100), time.Unix(0, 0)
	for range 100 { // healthy 20 ms calls, never busy
		fill(t, c, Live, 1, now)
		c.release(Live, now, 20*time.Millisecond, signalOK)
	}
	if got := c.Limit(); got != 10 {
		t.Fatalf("limit after healthy idle calls = %d, want 10", got)
	}
	for i := range 30 { // the API slows down fivefold
		now = now.Add(10 * time.Millisecond * time.Duration(i))
		fill(t, c, Live, 1, now)
		c.release(Live, now, 100*time.Millisecond, signalOK)
	}
	if got := c.Limit(); got >= 10 {
		t.Fatalf("limit after latency rose fivefold = %d, want it cut below 10", got)
	}
}

func TestConcurrencyRateLimitIsNotAConcurrencySignal(t *testing.T) {
	c, now := testConcurrency(10, 100), time.Unix(0, 0)
	fill(t, c, Live, 10, now)
	for range 10 {
		c.release(Live, now, time.Millisecond, signalNeutral)
	}
	if got := c.Limit(); got != 10 {
		t.Fatalf("limit after 429s = %d, want 10: 429s are handled by the rate, not the concurrency", got)
	}
}

func TestConcurrencyLiveKeepsItsShare(t *testing.T) {
	c, now := testConcurrency(10, 10), time.Unix(100, 0)
	fill(t, c, Resync, 10, now) // no live traffic yet: resync may use all
	for range 10 {
		c.release(Resync, now, time.Millisecond, signalNeutral)
	}
	fill(t, c, Live, 1, now) // live is active now
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	fill(t, c, Resync, 7, now) // (1-0.3)*10
	if err := c.acquire(ctx, Resync, now); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("8th resync slot while live is active: %v; want to wait (capped at 7 of 10)", err)
	}
	fill(t, c, Live, 2, now) // live still gets the rest
	if in := c.InFlight(); in != [2]int{3, 7} {
		t.Fatalf("in flight = %v, want 3 live, 7 resync", in)
	}
}

func TestConcurrencyServesLiveWaitersFirst(t *testing.T) {
	c, now := testConcurrency(1, 1), time.Unix(100, 0)
	c.share = 0 // only ordering is under test
	fill(t, c, Resync, 1, now)
	order := make(chan Priority, 2)
	resyncQueued := make(chan struct{})
	go func() {
		close(resyncQueued)
		if err := c.acquire(context.Background(), Resync, now); err == nil {
			order <- Resync
		}
	}()
	<-resyncQueued
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.waiters[Resync]) == 1 })
	go func() {
		if err := c.acquire(context.Background(), Live, now); err == nil {
			order <- Live
		}
	}()
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.waiters[Live]) == 1 })
	c.release(Resync, now, time.Millisecond, signalNeutral)
	if first := <-order; first != Live {
		t.Fatalf("first waiter served = %v, want live although resync queued first", first)
	}
	c.release(Live, now, time.Millisecond, signalNeutral)
	if second := <-order; second != Resync {
		t.Fatalf("second = %v, want resync", second)
	}
}

func TestConcurrencyCancelledWaitHoldsNoSlot(t *testing.T) {
	c, now := testConcurrency(1, 1), time.Unix(0, 0)
	fill(t, c, Live, 1, now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.acquire(ctx, Live, now); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire = %v, want context.Canceled", err)
	}
	c.release(Live, now, time.Millisecond, signalNeutral)
	if in := c.InFlight(); in != [2]int{} {
		t.Fatalf("in flight after release = %v, want none", in)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
