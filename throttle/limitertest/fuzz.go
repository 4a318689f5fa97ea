package limitertest

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
)

// Fuzz checks an adapter on whatever rate, burst, batch size, hold and
// probe lease a fuzzer picks, against the GCRA model after throttle's clamps (see
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
		rate             float64
		burst, n, holdIn int64
		holdRate         float64
		ttl              int64
	}{
		{2, 3, 1, int64(time.Second), 650.5, int64(300 * time.Millisecond)},
		{0, 0, 0, 0, 0, 0},
		{nan, 1, -1, -int64(time.Second), nan, -int64(time.Second)},
		{1e-13, 1 << 40, 1 << 40, math.MaxInt64, inf, math.MaxInt64},
		{1e-10, math.MaxInt64, math.MaxInt64, math.MinInt64, -inf, math.MinInt64},
		{1e12, math.MinInt64, math.MinInt64, int64(time.Hour), 1e-13, int64(time.Hour)},
		{inf, 1 << 31, 7, int64(300 * time.Millisecond), 1e12, 1},
		{-inf, 2348271757, 3, int64(48 * time.Hour), 0.1234567890123456, int64(48 * time.Hour)},
		{throttle.MaxRate, throttle.MaxBurst, throttle.MaxBurst, int64(throttle.MaxSpan), throttle.MaxRate, int64(throttle.MaxSpan)},
		{throttle.MinRate, 1, 2, int64(time.Minute), throttle.MinRate, int64(time.Millisecond)},
		{6.7e9, 2, 5, int64(time.Minute), 6.7e9, int64(10 * time.Second)},
		{500, 25, 10, int64(time.Second), 475, int64(time.Second)},
	} {
		f.Add(s.rate, s.burst, s.n, s.holdIn, s.holdRate, s.ttl)
	}
	f.Fuzz(func(t *testing.T, rate float64, burst, n, holdIn int64, holdRate float64, ttl int64) {
		l := newLimiter(t)
		name := testenv.UniqueName("fz")
		checkTakes(t, l, name, rate, int(burst), int(n))
		checkHold(t, l, name, time.Duration(holdIn), holdRate)
		checkProbe(t, l, name, time.Duration(ttl))
	})
}

// checkTakes: a batch of n and then a single take on a fresh name follow
// the GCRA at the clamped rate, burst and n.
func checkTakes(t *testing.T, l throttle.Limiter, name string, rate float64, burst, n int) {
	interval, b := throttle.EmissionInterval(rate), throttle.ClampBurst(burst)
	want := min(throttle.ClampBurst(n), b)
	start := time.Now()
	if got, wait, err := l.Take(context.Background(), name, rate, burst, n); err != nil || got != want || wait != 0 {
		t.Fatalf("first take of %d at rate %v burst %d: granted %d, wait %v, err %v; want %d", n, rate, burst, got, wait, err, want)
	}
	ok, wait, err := take1(context.Background(), l, name, rate, burst)
	elapsed := time.Since(start)
	left := b - want
	switch {
	case err != nil || wait < 0 || (ok && wait != 0):
		t.Fatalf("take after a batch of %d at rate %v burst %d: ok=%v wait=%v err=%v", want, rate, burst, ok, wait, err)
	case !ok && left > 0:
		t.Fatalf("take at rate %v burst %d (clamped to %d) after a batch of %d refused for %v; want ok within the burst", rate, burst, b, want, wait)
	case !ok && (wait > interval || wait < interval-elapsed-slack):
		t.Fatalf("take at rate %v with the burst of %d spent refused for %v; want the rest of the interval %v", rate, b, wait, interval)
	case ok && left == 0 && interval > elapsed+slack:
		t.Fatalf("take at rate %v granted %v after a batch spent the burst of %d; want refused for the interval %v", rate, elapsed, b, interval)
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
		ok, wait, err := take1(ctx, l, name, throttle.MaxRate, throttle.MaxBurst)
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
