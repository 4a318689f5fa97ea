package limitertest

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
)

// minInterval is the emission interval at throttle.MinRate (1000 s).
var minInterval = throttle.EmissionInterval(throttle.MinRate)

// runExtremes checks that every adapter clamps extreme inputs into
// throttle's limits the same way: no error, no negative wait, never "no
// limit", holds and leases no longer than throttle.MaxSpan.
func runExtremes(t *testing.T, newLimiter func(t *testing.T) throttle.Limiter) {
	// Rates at or below 0, NaN and tiny ones are MinRate; bursts below 1
	// are 1.
	for _, c := range []struct {
		rate  float64
		burst int
	}{
		{0, 1}, {-1, 0}, {math.NaN(), 1}, {math.Inf(-1), -1}, {1e-13, 1}, {1e-10, math.MinInt}, {throttle.MinRate / 2, 0},
	} {
		t.Run("LowRateIsMinRate/"+ftoa(c.rate)+"/burst"+itoa(c.burst), func(t *testing.T) {
			t.Parallel()
			l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
			start := time.Now()
			mustTake(t, l, name, c.rate, c.burst)
			ok, wait, err := take1(ctx, l, name, c.rate, c.burst)
			if err != nil || ok {
				t.Fatalf("second take at rate %v burst %d: ok=%v wait=%v err=%v; want refused for about %v (rate %v, burst 1)", c.rate, c.burst, ok, wait, err, minInterval, throttle.MinRate)
			}
			if least := minInterval - time.Since(start) - slack; wait < least || wait > minInterval {
				t.Fatalf("second take at rate %v burst %d: retryAfter %v; want about %v, the interval at rate %v", c.rate, c.burst, wait, minInterval, throttle.MinRate)
			}
		})
	}

	// Rates above MaxRate are MaxRate: an interval of 1µs, not 0 (no
	// limit) nor 1ns. Seen behind three slow takes that put the arrival
	// time 3000 s ahead: a take with burst MaxBurst may run MaxBurst
	// intervals ahead of now, so its wait tells the interval apart.
	for _, rate := range []float64{throttle.MaxRate, 2e6, 1e7, 1e12, math.Inf(1), math.MaxFloat64} {
		t.Run("HighRateIsMaxRate/"+ftoa(rate), func(t *testing.T) {
			t.Parallel()
			l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
			start := time.Now()
			for range 3 {
				mustTake(t, l, name, throttle.MinRate, throttle.MaxBurst)
			}
			ok, wait, err := take1(ctx, l, name, rate, throttle.MaxBurst)
			want := 3*minInterval - (throttle.MaxBurst-1)*time.Microsecond
			if err != nil || ok || wait > want || wait < want-time.Since(start)-slack {
				t.Fatalf("take at rate %v burst %d, 3000s behind: ok=%v wait=%v err=%v; want refused for about %v (an interval of 1µs)", rate, throttle.MaxBurst, ok, wait, err, want)
			}
		})
	}

	for _, burst := range []int{1 << 31, 1 << 40, math.MaxInt} {
		t.Run("HugeBurstIsMaxBurst/"+itoa(burst), func(t *testing.T) {
			t.Parallel()
			l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
			start := time.Now()
			for range 3 {
				mustTake(t, l, name, throttle.MinRate, burst)
			}
			// Three calls at MinRate put the arrival time three intervals
			// ahead: a take with burst 1 waits for all of them.
			ok, wait, err := take1(ctx, l, name, throttle.MinRate, 1)
			want := 3 * minInterval
			if err != nil || ok || wait > want || wait < want-time.Since(start)-slack {
				t.Fatalf("take with burst 1 after 3 with burst %d at rate %v: ok=%v wait=%v err=%v; want refused for about %v", burst, throttle.MinRate, ok, wait, err, want)
			}
		})
	}

	// A batch of 0 or fewer calls asks for 1; one larger than MaxBurst for
	// MaxBurst, which at MinRate puts the arrival time 32 years ahead: the
	// adapter's arithmetic must hold it exactly.
	t.Run("BatchSizeIsClamped", func(t *testing.T) {
		t.Parallel()
		l, ctx := newLimiter(t), context.Background()
		for _, n := range []int{0, -1, math.MinInt} {
			name := testenv.UniqueName("lt")
			if got, wait, err := l.Take(ctx, name, throttle.MinRate, 3, n); err != nil || got != 1 || wait != 0 {
				t.Fatalf("batch of %d on a fresh name: granted %d, wait %v, err %v; want 1", n, got, wait, err)
			}
			if got, wait, err := l.Take(ctx, name, throttle.MinRate, 3, math.MaxInt); err != nil || got != 2 || wait != 0 {
				t.Fatalf("batch of %d after a batch of %d with burst 3: granted %d, wait %v, err %v; want the 2 left", math.MaxInt, n, got, wait, err)
			}
		}
		name := testenv.UniqueName("lt")
		start := time.Now()
		if got, wait, err := l.Take(ctx, name, throttle.MinRate, throttle.MaxBurst, math.MaxInt); err != nil || got != throttle.MaxBurst || wait != 0 {
			t.Fatalf("batch of %d at rate %v burst %d: granted %d, wait %v, err %v; want %d", math.MaxInt, throttle.MinRate, throttle.MaxBurst, got, wait, err, throttle.MaxBurst)
		}
		// The whole burst is spent: the next call waits one interval.
		ok, wait, err := take1(ctx, l, name, throttle.MinRate, throttle.MaxBurst)
		if err != nil || ok || wait > minInterval || wait < minInterval-time.Since(start)-slack {
			t.Fatalf("take after a batch of the whole burst: ok=%v wait=%v err=%v; want refused for about %v", ok, wait, err, minInterval)
		}
	})

	t.Run("HoldEndsWithinMaxSpan", func(t *testing.T) {
		t.Parallel()
		l, ctx := newLimiter(t), context.Background()
		for _, until := range []time.Time{time.Now().AddDate(100, 0, 0), time.Now().Add(math.MaxInt64), time.Unix(1<<40, 0)} {
			name := testenv.UniqueName("lt")
			before := time.Now()
			if err := l.Hold(ctx, name, until, 0); err != nil {
				t.Fatalf("hold until %v: %v", until, err)
			}
			got, _, err := l.HeldUntil(ctx, name)
			if err != nil || got.Before(before.Add(throttle.MaxSpan-slack)) || got.After(time.Now().Add(throttle.MaxSpan+slack)) {
				t.Fatalf("HeldUntil after a hold until %v = %v, %v; want now + %v", until, got, err, throttle.MaxSpan)
			}
			ok, wait, err := take1(ctx, l, name, 10, 1)
			if err != nil || ok || wait > throttle.MaxSpan+slack || wait < throttle.MaxSpan-time.Since(before)-slack {
				t.Fatalf("take during a hold until %v: ok=%v wait=%v err=%v; want refused for about %v", until, ok, wait, err, throttle.MaxSpan)
			}
		}
	})

	t.Run("HoldInThePastHoldsNothing", func(t *testing.T) {
		t.Parallel()
		l, ctx := newLimiter(t), context.Background()
		for _, until := range []time.Time{time.Now().Add(-time.Second), time.Now().Add(-time.Hour), {}, time.Unix(-1<<40, 0)} {
			name := testenv.UniqueName("lt")
			if err := l.Hold(ctx, name, until, 500); err != nil {
				t.Fatalf("hold until %v: %v", until, err)
			}
			if got, rate, err := l.HeldUntil(ctx, name); err != nil || !got.IsZero() || rate != 0 {
				t.Fatalf("HeldUntil after a hold until %v, in the past = %v, %v, %v; want no hold (zero time, rate 0)", until, got, rate, err)
			}
			mustTake(t, l, name, 10, 1)
		}
		// A past hold does not shorten a current one; its rate still
		// counts as a cut (the lowest rate wins while a hold lasts).
		name := testenv.UniqueName("lt")
		current := time.Now().Add(time.Minute)
		if err := l.Hold(ctx, name, current, 400); err != nil {
			t.Fatal(err)
		}
		if err := l.Hold(ctx, name, time.Now().Add(-time.Hour), 300); err != nil {
			t.Fatal(err)
		}
		if got, rate, err := l.HeldUntil(ctx, name); err != nil || got.Sub(current).Abs() > time.Millisecond || rate != 300 {
			t.Fatalf("HeldUntil after a past hold at 300 during one at 400 = %v, %v, %v; want %v, 300", got, rate, err, current)
		}
	})

	t.Run("HoldRateIsClamped", func(t *testing.T) {
		t.Parallel()
		l, ctx := newLimiter(t), context.Background()
		for _, c := range []struct{ give, want float64 }{
			{math.Inf(1), throttle.MaxRate}, {1e12, throttle.MaxRate}, {1e-13, throttle.MinRate},
			{math.NaN(), 0}, {math.Inf(-1), 0}, {-5, 0}, {0.1234567890123456, 0.1234567890123456},
		} {
			name := testenv.UniqueName("lt")
			if err := l.Hold(ctx, name, time.Now().Add(time.Minute), c.give); err != nil {
				t.Fatalf("hold with rate %v: %v", c.give, err)
			}
			if _, rate, err := l.HeldUntil(ctx, name); err != nil || rate != c.want {
				t.Fatalf("rate stored with a hold given rate %v = %v, %v; want %v", c.give, rate, err, c.want)
			}
		}
	})

	t.Run("ProbeLeaseOfNoTime", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		for _, step := range []struct {
			owner string
			ttl   time.Duration
			want  bool
		}{
			{"a", -time.Second, true}, // free: taken for no time
			{"b", time.Minute, true},  // so b takes it
			{"a", 0, false},           // b holds it
			{"a", math.MinInt64, false},
			{"b", -time.Hour, true},      // b gives it up
			{"a", time.Minute, true},     // at once
			{"b", time.Minute, false},    // a holds it
			{"a", time.Nanosecond, true}, // renewal for a nanosecond (a millisecond on Redis)
		} {
			if ok, err := l.TryProbe(ctx, name, step.owner, step.ttl); err != nil || ok != step.want {
				t.Fatalf("TryProbe(%s, %v) = %v, %v; want %v", step.owner, step.ttl, ok, err, step.want)
			}
		}
	})

	t.Run("ProbeLeaseWithinMaxSpan", func(t *testing.T) {
		t.Parallel()
		l, name, ctx := newLimiter(t), testenv.UniqueName("lt"), context.Background()
		if ok, err := l.TryProbe(ctx, name, "a", math.MaxInt64); err != nil || !ok {
			t.Fatalf("TryProbe for the longest duration: %v, %v; want true", ok, err)
		}
		if ok, err := l.TryProbe(ctx, name, "b", time.Minute); err != nil || ok {
			t.Fatalf("TryProbe by b while a holds a long lease: %v, %v; want false", ok, err)
		}
	})
}

func mustTake(t *testing.T, l throttle.Limiter, name string, rate float64, burst int) {
	t.Helper()
	if ok, wait, err := take1(context.Background(), l, name, rate, burst); err != nil || !ok || wait != 0 {
		t.Fatalf("first take of %s at rate %v burst %d: ok=%v wait=%v err=%v; want ok", name, rate, burst, ok, wait, err)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func itoa(i int) string { return strconv.Itoa(i) }
