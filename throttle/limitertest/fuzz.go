package limitertest

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
)

// Fuzz checks an adapter on whatever rate, burst, hold and probe lease a
// fuzzer picks, against the GCRA model after throttle's clamps (see
// throttle.ClampRate): every adapter must give the same answers, never an
// error, a negative wait or "no limit". An adapter's fuzz test calls it:
//
//	func FuzzLimiter(f *testing.F) { limitertest.Fuzz(f, newLimiter) }
//
// newLimiter is called once per input and may return the same limiter each
// time; each input uses a fresh name.
func Fuzz(f *testing.F, newLimiter func(t *testing.T) throttle.Limiter) {
	inf, nan := math.Inf(1), math.NaN()
	for _, s := range []struct {
		rate          float64
		burst, holdIn int64
		holdRate      float64
		ttl           int64
	}{
		{2, 3, int64(time.Second), 650.5, int64(300 * time.Millisecond)},
		{0, 0, 0, 0, 0},
		{nan, 1, -int64(time.Second), nan, -int64(time.Second)},
		{1e-13, 1 << 40, math.MaxInt64, inf, math.MaxInt64},
		{1e-10, math.MaxInt64, math.MinInt64, -inf, math.MinInt64},
		{1e12, math.MinInt64, int64(time.Hour), 1e-13, int64(time.Hour)},
		{inf, 1 << 31, int64(300 * time.Millisecond), 1e12, 1},
		{-inf, 2348271757, int64(48 * time.Hour), 0.1234567890123456, int64(48 * time.Hour)},
		{throttle.MaxRate, throttle.MaxBurst, int64(throttle.MaxSpan), throttle.MaxRate, int64(throttle.MaxSpan)},
		{throttle.MinRate, 1, int64(time.Minute), throttle.MinRate, int64(time.Millisecond)},
		{6.7e9, 2, int64(time.Minute), 6.7e9, int64(10 * time.Second)},
	} {
		f.Add(s.rate, s.burst, s.holdIn, s.holdRate, s.ttl)
	}
	f.Fuzz(func(t *testing.T, rate float64, burst, holdIn int64, holdRate float64, ttl int64) {
		l := newLimiter(t)
		name := testenv.UniqueName("fz")
		checkTakes(t, l, name, rate, int(burst))
		checkHold(t, l, name, time.Duration(holdIn), holdRate)
		checkProbe(t, l, name, time.Duration(ttl))
	})
}

// checkTakes: two takes on a fresh name follow the GCRA at the clamped rate
// and burst.
func checkTakes(t *testing.T, l throttle.Limiter, name string, rate float64, burst int) {
	interval, b := throttle.EmissionInterval(rate), throttle.ClampBurst(burst)
	start := time.Now()
	mustTake(t, l, name, rate, burst)
	ok, wait, err := l.Take(context.Background(), name, rate, burst)
	elapsed := time.Since(start)
	switch {
	case err != nil || wait < 0 || (ok && wait != 0):
		t.Fatalf("second take at rate %v burst %d: ok=%v wait=%v err=%v", rate, burst, ok, wait, err)
	case !ok && b > 1:
		t.Fatalf("second take at rate %v burst %d (clamped to %d) refused for %v; want ok within the burst", rate, burst, b, wait)
	case !ok && (wait > interval || wait < interval-elapsed-slack):
		t.Fatalf("second take at rate %v burst 1 refused for %v; want the rest of the interval %v", rate, wait, interval)
	case ok && b == 1 && interval > elapsed+slack:
		t.Fatalf("second take at rate %v burst 1 granted %v after the first; want refused for the interval %v", rate, elapsed, interval)
	}
}

// checkHold: a hold ending in the future lasts at most MaxSpan, carries
// its clamped rate and stops Take; one that ended is no hold at all.
func checkHold(t *testing.T, l throttle.Limiter, name string, in time.Duration, rate float64) {
	ctx := context.Background()
	now := time.Now()
	until := now.Add(in)
	if err := l.Hold(ctx, name, until, rate); err != nil {
		t.Fatalf("hold for %v with rate %v: %v", in, rate, err)
	}
	got, gotRate, err := l.HeldUntil(ctx, name)
	after := time.Now()
	if err != nil {
		t.Fatalf("HeldUntil after a hold for %v: %v", in, err)
	}
	want := throttle.ClampHoldEnd(now, until)
	switch {
	case want.After(after.Add(slack)):
		// Adapters store microseconds and clamp from their own now.
		lo, hi := want.Add(-time.Millisecond), want.Add(time.Millisecond)
		if !want.Equal(until) {
			hi = throttle.ClampHoldEnd(after, until).Add(time.Millisecond)
		}
		if got.Before(lo) || got.After(hi) {
			t.Fatalf("HeldUntil after a hold for %v = %v; want %v (at most %v ahead)", in, got, want, throttle.MaxSpan)
		}
		if wantRate := throttle.HoldRate(rate); gotRate != wantRate {
			t.Fatalf("rate stored with a hold given %v = %v; want %v", rate, gotRate, wantRate)
		}
		most := time.Until(got)
		ok, wait, err := l.Take(ctx, name, throttle.MaxRate, throttle.MaxBurst)
		if least := time.Until(got); err != nil || ok || wait > most+time.Millisecond || wait < least-time.Millisecond {
			t.Fatalf("take during a hold for %v: ok=%v wait=%v err=%v; want refused for the rest of the hold, %v to %v", in, ok, wait, err, least, most)
		}
	case until.Before(now.Add(-slack)):
		if !got.IsZero() || gotRate != 0 {
			t.Fatalf("HeldUntil after a hold that ended %v ago = %v, %v; want no hold", -in, got, gotRate)
		}
	}
}

// checkProbe: a lease of ttl ≤ 0 leaves the lease free, a longer one
// keeps others out.
func checkProbe(t *testing.T, l throttle.Limiter, name string, ttl time.Duration) {
	ctx := context.Background()
	start := time.Now()
	if ok, err := l.TryProbe(ctx, name, "a", ttl); err != nil || !ok {
		t.Fatalf("TryProbe(a, %v) on a free lease = %v, %v; want true", ttl, ok, err)
	}
	ok, err := l.TryProbe(ctx, name, "b", time.Minute)
	span := throttle.ClampSpan(ttl)
	switch {
	case err != nil:
		t.Fatalf("TryProbe(b) after a's lease of %v: %v", ttl, err)
	case span == 0 && !ok:
		t.Fatalf("TryProbe(b) after a's lease of %v = false; want true (a lease of no time is free)", ttl)
	case span > time.Since(start)+slack && ok:
		t.Fatalf("TryProbe(b) during a's lease of %v = true; want false", ttl)
	}
}
