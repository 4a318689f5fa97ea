// Package limitertest is the conformance suite every throttle.Limiter
// adapter passes, for single takes and batches (Take of n calls). An adapter's test calls Run with a constructor; every
// subtest uses its own names, so one limiter may serve them all in parallel.
// The checks allow a few milliseconds of scheduling and clock slack but
// would fail for a limiter that lets a burst or a hold through. Extreme
// inputs (rates of 0, NaN or +Inf, huge bursts, holds and leases of any
// length) must be clamped into throttle's limits (throttle.MinRate and the
// rest) as the throttle package's helpers do; Fuzz checks the same on
// inputs a fuzzer chooses.
package limitertest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
)

// slack absorbs scheduling, round trips and timestamp rounding.
const slack = 25 * time.Millisecond

// Run runs the suite against the limiter newLimiter returns; it is called
// once per subtest and may return the same limiter each time.
func Run(t *testing.T, newLimiter func(t *testing.T) throttle.Limiter) {
	t.Run("BurstThenRate", func(t *testing.T) {
		t.Parallel()
		// 2/s: a token every 500 ms, so a busy machine's pauses do not
		// refill one between two takes.
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		for i := range 3 {
			if ok, wait, err := take1(ctx, l, name, 2, 3); err != nil || !ok {
				t.Fatalf("take %d of a burst of 3: ok=%v wait=%v err=%v; want ok", i+1, ok, wait, err)
			}
		}
		ok, wait, err := take1(ctx, l, name, 2, 3)
		if err != nil || ok {
			t.Fatalf("4th take right after a burst of 3: ok=%v err=%v; want refused", ok, err)
		}
		if wait <= 0 || wait > 500*time.Millisecond+slack {
			t.Fatalf("retryAfter %v at 2/s; want (0, 500ms]", wait)
		}
		time.Sleep(wait + 5*time.Millisecond)
		if ok, wait, err := take1(ctx, l, name, 2, 3); err != nil || !ok {
			t.Fatalf("take after waiting retryAfter: ok=%v wait=%v err=%v; want ok", ok, wait, err)
		}
		if ok, _, _ := take1(ctx, l, name, 2, 3); ok {
			t.Fatal("a second take right after the refilled token was granted; want refused")
		}
	})

	t.Run("NamesAreIndependent", func(t *testing.T) {
		t.Parallel()
		l, ctx := newLimiter(t), context.Background()
		a, b := testenv.UniqueName("lt"), testenv.UniqueName("lt")
		if ok, _, err := take1(ctx, l, a, 1, 1); err != nil || !ok {
			t.Fatalf("first take on %s: ok=%v err=%v", a, ok, err)
		}
		if ok, _, err := take1(ctx, l, b, 1, 1); err != nil || !ok {
			t.Fatalf("first take on %s after %s was drained: ok=%v err=%v; names must not share a budget", b, a, ok, err)
		}
		if err := l.Hold(ctx, a, time.Now().Add(time.Minute), 0); err != nil {
			t.Fatal(err)
		}
		if until, _, err := l.HeldUntil(ctx, b); err != nil || !until.IsZero() {
			t.Fatalf("HeldUntil(%s) = %v, %v after holding %s; want zero", b, until, err, a)
		}
	})

	t.Run("HoldStopsTake", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		if until, _, err := l.HeldUntil(ctx, name); err != nil || !until.IsZero() {
			t.Fatalf("HeldUntil of a fresh name = %v, %v; want zero time", until, err)
		}
		// Long enough that the takes below start and end within it even on
		// a busy machine (four round trips took over 300 ms in CI).
		until := time.Now().Add(2 * time.Second)
		if err := l.Hold(ctx, name, until, 0); err != nil {
			t.Fatal(err)
		}
		got, _, err := l.HeldUntil(ctx, name)
		if err != nil || got.Sub(until).Abs() > time.Millisecond {
			t.Fatalf("HeldUntil = %v, %v; want %v", got, err, until)
		}
		// The wait is the hold's remaining time at some moment during the
		// call: bound it by the remaining time before and after the call
		// (a busy machine may take a while to answer).
		before := time.Until(until)
		ok, wait, err := take1(ctx, l, name, 1000, 100)
		after := time.Until(until)
		if err != nil || ok {
			t.Fatalf("take during a hold: ok=%v err=%v; want refused", ok, err)
		}
		if wait < after-slack || wait > before+slack {
			t.Fatalf("retryAfter during a hold = %v; want the hold's remaining time, between %v and %v", wait, after, before)
		}
		beforeBatch := time.Until(until)
		granted, wait, err := l.Take(ctx, name, 1000, 100, 50)
		switch {
		case err != nil:
			t.Fatalf("take of a batch of 50 during a hold: %v", err)
		case time.Until(until) <= 0:
			// The call returned after the hold ended: a grant is then
			// right, and a refusal cannot be asserted.
			t.Logf("the hold ended before the batch take returned (a busy machine); granted %d", granted)
		case granted != 0 || wait <= 0 || wait > beforeBatch+slack:
			t.Fatalf("take of a batch of 50 during a hold: granted %d, wait %v; want none, and the hold's remaining time", granted, wait)
		}
		time.Sleep(time.Until(until) + slack)
		if ok, wait, err := take1(ctx, l, name, 1000, 100); err != nil || !ok {
			t.Fatalf("take after the hold ended: ok=%v wait=%v err=%v; want ok", ok, wait, err)
		}
	})

	t.Run("BatchGrantsWhatConforms", func(t *testing.T) {
		t.Parallel()
		// 2/s with a burst of 4: a batch gets what single takes in a row
		// would, never more than the burst left.
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		if got, wait, err := l.Take(ctx, name, 2, 4, 3); err != nil || got != 3 || wait != 0 {
			t.Fatalf("batch of 3 on a fresh name, burst 4: granted %d, wait %v, err %v; want all 3", got, wait, err)
		}
		if got, wait, err := l.Take(ctx, name, 2, 4, 5); err != nil || got != 1 || wait != 0 {
			t.Fatalf("batch of 5 with 1 of the burst of 4 left: granted %d, wait %v, err %v; want the 1 left", got, wait, err)
		}
		got, wait, err := l.Take(ctx, name, 2, 4, 5)
		if err != nil || got != 0 || wait <= 0 || wait > 500*time.Millisecond+slack {
			t.Fatalf("batch of 5 with the burst spent: granted %d, wait %v, err %v; want none, and a wait of at most 500ms", got, wait, err)
		}
		time.Sleep(wait + 5*time.Millisecond)
		if got, wait, err := l.Take(ctx, name, 2, 4, 5); err != nil || got != 1 {
			t.Fatalf("batch of 5 one interval later: granted %d, wait %v, err %v; want exactly 1 (one call per 500ms)", got, wait, err)
		}
		if ok, _, _ := take1(ctx, l, name, 2, 4); ok {
			t.Fatal("a single take right after the batch emptied the burst was granted; want refused")
		}
	})

	t.Run("HoldOnlyExtends", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		long := time.Now().Add(time.Hour)
		if err := l.Hold(ctx, name, long, 0); err != nil {
			t.Fatal(err)
		}
		if err := l.Hold(ctx, name, time.Now().Add(time.Second), 0); err != nil {
			t.Fatal(err)
		}
		if got, _, err := l.HeldUntil(ctx, name); err != nil || got.Sub(long).Abs() > time.Millisecond {
			t.Fatalf("HeldUntil after a shorter second hold = %v, %v; want the longer %v", got, err, long)
		}
	})

	t.Run("HoldCarriesTheLowestRate", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		until := time.Now().Add(time.Second) // long enough for a busy machine's four round trips
		for _, step := range []struct{ give, want float64 }{{400, 400}, {300, 300}, {500, 300}, {0, 300}} {
			if err := l.Hold(ctx, name, until, step.give); err != nil {
				t.Fatal(err)
			}
			if _, rate, err := l.HeldUntil(ctx, name); err != nil || rate != step.want {
				t.Fatalf("after Hold with rate %v: rate %v, %v; want %v (the lowest while the hold lasts)", step.give, rate, err, step.want)
			}
		}
		time.Sleep(time.Until(until) + slack)
		if err := l.Hold(ctx, name, time.Now().Add(time.Second), 650.5); err != nil {
			t.Fatal(err)
		}
		if _, rate, err := l.HeldUntil(ctx, name); err != nil || rate != 650.5 {
			t.Fatalf("new hold after the old one ended: rate %v, %v; want 650.5", rate, err)
		}
	})

	t.Run("ProbeLease", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		if ok, err := l.TryProbe(ctx, name, "a", 300*time.Millisecond); err != nil || !ok {
			t.Fatalf("first TryProbe: %v, %v; want true", ok, err)
		}
		if ok, err := l.TryProbe(ctx, name, "b", 300*time.Millisecond); err != nil || ok {
			t.Fatalf("TryProbe by b while a holds the lease: %v, %v; want false", ok, err)
		}
		if ok, err := l.TryProbe(ctx, name, "a", 300*time.Millisecond); err != nil || !ok {
			t.Fatalf("renewal by the holder: %v, %v; want true", ok, err)
		}
		time.Sleep(300*time.Millisecond + slack)
		if ok, err := l.TryProbe(ctx, name, "b", time.Minute); err != nil || !ok {
			t.Fatalf("TryProbe by b after a's lease expired: %v, %v; want true", ok, err)
		}
		if ok, err := l.TryProbe(ctx, name, "a", time.Minute); err != nil || ok {
			t.Fatalf("TryProbe by a after b took over: %v, %v; want false", ok, err)
		}
	})

	t.Run("OneProbeAmongMany", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		var winners atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				ok, err := l.TryProbe(ctx, name, string(rune('a'+i)), time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					winners.Add(1)
				}
			})
		}
		wg.Wait()
		if n := winners.Load(); n != 1 {
			t.Fatalf("%d of 16 concurrent owners got the probe lease; want exactly 1", n)
		}
	})

	t.Run("ConcurrentTakesKeepTheRate", func(t *testing.T) {
		t.Parallel()
		l, name := newLimiter(t), testenv.UniqueName("lt")
		const rate, burst, workers = 100.0, 5, 8
		ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
		defer cancel()
		start := time.Now()
		var granted atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				n := 1 + w%3 // single takes and batches share the rate
				for ctx.Err() == nil {
					got, wait, err := l.Take(ctx, name, rate, burst, n)
					if err != nil {
						if ctx.Err() == nil {
							t.Error(err)
						}
						return
					}
					if got < 0 || got > n {
						t.Errorf("Take of %d granted %d", n, got)
						return
					}
					if got > 0 {
						granted.Add(int64(got))
						continue
					}
					select {
					case <-ctx.Done():
					case <-time.After(max(wait, time.Millisecond)):
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start).Seconds()
		most := burst + rate*elapsed + 1
		least := rate * 0.3 * 0.5 // generous: round trips on a loaded machine
		if n := float64(granted.Load()); n > most || n < least {
			t.Fatalf("%d workers at %v/s burst %d for %.2fs were granted %v calls; want between %.0f and %.0f", workers, rate, burst, elapsed, n, least, most)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		t.Parallel()
		l, name := newLimiter(t), testenv.UniqueName("lt")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, _, err := l.Take(ctx, name, 10, 1, 1); err == nil {
			t.Fatal("Take with a cancelled context returned no error")
		}
		if err := l.Hold(ctx, name, time.Now().Add(time.Second), 0); err == nil {
			t.Fatal("Hold with a cancelled context returned no error")
		}
	})
	t.Run("Extremes", func(t *testing.T) { runExtremes(t, newLimiter) })
}

// take1 takes one call and checks the answer's shape: 1 granted and no
// wait, or none and a wait.
func take1(ctx context.Context, l throttle.Limiter, name string, rate float64, burst int) (ok bool, wait time.Duration, err error) {
	granted, wait, err := l.Take(ctx, name, rate, burst, 1)
	if err == nil && (granted < 0 || granted > 1 || (granted == 1) != (wait == 0)) {
		return false, wait, fmt.Errorf("take of 1 call granted %d with a wait of %v; want 1 and no wait, or 0 and a wait", granted, wait)
	}
	return granted == 1, wait, err
}
