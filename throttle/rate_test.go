package throttle

import (
	"math"
	"testing"
	"time"
)

// drive advances the controller by d in steps of 100 ms, binding throughout.
func drive(r *rateController, now time.Time, d time.Duration) time.Time {
	for end := now.Add(d); now.Before(end); {
		now = now.Add(100 * time.Millisecond)
		r.Refused(now)
	}
	return now
}

func near(a, b float64) bool { return math.Abs(a-b) <= 0.02*b }

// fromFifty learns the rate by slow start from 50/s, as every learner did
// before the unbound start.
var fromFifty = Config{InitialRate: 50}.WithDefaults()

// serve records n calls served, spread over the second before now.
func serve(r *rateController, now time.Time, n int) {
	for i := range n {
		r.Served(now.Add(-time.Duration(i) * time.Second / time.Duration(n)))
	}
}

// By default the learner has no rate until the first congestion: it
// passes MaxRate (the limiter only relays holds), shows none, and refusals
// do not move it. The first 429 starts slow start from the calls the API
// served in the last second.
func TestRateStartsUnboundAndSlowStartsFromTheAchievedThroughput(t *testing.T) {
	now := time.Unix(100, 0)
	r := newRateController(Config{}.WithDefaults(), now)
	now = drive(r, now, 5*time.Second)
	if got := r.Rate(now); got != MaxRate {
		t.Fatalf("rate before any 429 = %v; want MaxRate (no limit)", got)
	}
	if shown, _ := r.Allowed(); shown != 0 {
		t.Fatalf("rate shown before any 429 = %v; want 0 (none known)", shown)
	}
	serve(r, now.Add(-2*time.Second), 5000) // older than a second: not counted
	serve(r, now, 700)
	got := r.Congested(now, now.Add(time.Second))
	// Counted in tenths of a second, the current one included: 0.9 to 1 s.
	if got < 630 || got > 700 || !r.slowStart {
		t.Fatalf("rate after the first 429 = %v (slow start %v); want the 700 calls/s served in the last second (630 to 700), in slow start", got, r.slowStart)
	}
	now = drive(r, now.Add(time.Second), 2*time.Second)
	if want := got * math.Pow(2, 1.9); !near(r.Rate(now), want) {
		t.Fatalf("rate 2 binding seconds after the first 429 = %v; want doubling from %v (about %v)", r.Rate(now), got, want)
	}
	before := r.Rate(now)
	if got := r.Congested(now, now.Add(time.Second)); !near(got, before/2) {
		t.Fatalf("rate after the second 429 = %v; want half of %v (the end of slow start)", got, before)
	}
}

// An unbound learner that adopts another process's hold starts slow start
// from the rate published with it; one that finds a limit the cluster
// learned before starts from that, past slow start; a bound one ignores it.
func TestRateUnboundAdoptsAndKnownLimits(t *testing.T) {
	now := time.Unix(100, 0)
	r := newRateController(Config{}.WithDefaults(), now)
	r.Adopt(now, now.Add(time.Second), 321)
	if got := r.Rate(now); got != 321 || !r.slowStart {
		t.Fatalf("rate after adopting 321 while unbound = %v (slow start %v); want 321 in slow start", got, r.slowStart)
	}
	// A lower rate another process published for the same first contact
	// is taken, and slow start goes on from it.
	r.Adopt(now.Add(100*time.Millisecond), now.Add(time.Second), 200)
	if got := r.Rate(now); got != 200 || !r.slowStart {
		t.Fatalf("rate after a lower one of the same hold = %v (slow start %v); want 200 in slow start", got, r.slowStart)
	}
	k := newRateController(Config{}.WithDefaults(), now)
	k.Known(now, 480)
	if got := k.Rate(now); got != 480 || k.slowStart {
		t.Fatalf("rate after a known limit of 480 = %v (slow start %v); want 480, probing", got, k.slowStart)
	}
	k.Known(now, 10)
	if got := k.Rate(now); got != 480 {
		t.Fatalf("a second known limit moved a bound rate to %v; want 480 kept", got)
	}
	if n := newRateController(Config{}.WithDefaults(), now); n.Congested(now, now) != firstRate {
		t.Fatalf("a 429 with nothing served did not start slow start from %v/s", float64(firstRate))
	}
}

func TestRateSlowStartDoublesPerSecondWhileBinding(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	now = drive(r, now, 2*time.Second)
	// The first step only notices binding: 1.9 s of doubling.
	if got := r.Rate(now); !near(got, 50*math.Pow(2, 1.9)) {
		t.Fatalf("rate after 2s of slow start from 50 = %v, want about 186", got)
	}
	now = now.Add(5 * time.Second) // demand fell: at most 200 ms more growth
	if got := r.Rate(now); got > 50*math.Pow(2, 2.1)+0.01 {
		t.Fatalf("rate after 5 idle seconds = %v, want it unchanged", got)
	}
}

func TestRateFirstCongestionHalves(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	now = drive(r, now, 3*time.Second)
	before := r.Rate(now)
	if got := r.Congested(now, now.Add(time.Second)); !near(got, before/2) {
		t.Fatalf("rate after the first 429 = %v, want half of %v", got, before)
	}
}

func TestRateCutAimsBelowTheEstimatedLimit(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(Config{InitialRate: 600}.WithDefaults(), now)
	r.slowStart = false
	r.mu.Lock()
	r.rate = 600
	r.mu.Unlock()
	// Hold growth still: a fresh cycle grows slowly; measure what we set.
	now = drive(r, now, 3*time.Second)
	granted, binding := r.granted, r.bindingTime
	got := r.Congested(now, now.Add(time.Second))
	want := 0.95 * granted / (binding + time.Second).Seconds()
	if !near(got, want) {
		t.Fatalf("rate after a 429 = %v, want 0.95 × granted/(binding+hold) = %v", got, want)
	}
	// More 429s of the same episode (until the hold ends) cut nothing.
	if again := r.Congested(now.Add(500*time.Millisecond), now.Add(1500*time.Millisecond)); again != got {
		t.Fatalf("second 429 of one episode changed the rate to %v", again)
	}
}

func TestRateShortCycleCutsBlind(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(Config{Rate: 1000}.WithDefaults(), now)
	now = drive(r, now, 500*time.Millisecond)
	before := r.Rate(now)
	if got := r.Congested(now, now.Add(time.Second)); !near(got, before*blindCut) {
		t.Fatalf("rate after a 429 half a second into the cycle = %v, want %v × %v", got, before, blindCut)
	}
}

func TestRateConfiguredIsACeiling(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(Config{Rate: 500}.WithDefaults(), now)
	now = drive(r, now, 20*time.Second)
	if got := r.Rate(now); got != 500 {
		t.Fatalf("configured rate after 20 binding seconds = %v, want exactly 500", got)
	}
	r.Congested(now, now.Add(time.Second))
	now = now.Add(time.Second)
	low := r.Rate(now)
	if low >= 500 {
		t.Fatalf("a 429 at the configured rate did not lower it: %v", low)
	}
	now = drive(r, now, 30*time.Second)
	if got := r.Rate(now); got != 500 {
		t.Fatalf("rate 30s after the 429 = %v, want back at the ceiling 500", got)
	}
}

func TestRateProbingFindsADoubledLimitWithinTenSeconds(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	r.Adopt(now, now, 240) // just cut below a 250/s limit
	now = drive(r, now, 10*time.Second)
	if got := r.Rate(now); got < 450 {
		t.Fatalf("rate 10s after a cut to 240 = %v, want ≥ 450 so a doubled limit is found", got)
	}
}

func TestRateAdoptsPublishedRate(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	now = drive(r, now, 4*time.Second)
	r.Adopt(now, now.Add(time.Second), 321)
	if got := r.Rate(now); got != 321 {
		t.Fatalf("rate after adopting 321 = %v", got)
	}
	if r.slowStart {
		t.Fatal("still in slow start after adopting a learned rate")
	}
}

// cutAt500 returns a controller past slow start whose last cut aimed at an
// estimated limit of 500/s, and the time the hold ended.
func cutAt500(t *testing.T) (*rateController, time.Time) {
	t.Helper()
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	r.slowStart = false // past slow start, like the process that cut
	hold := now.Add(time.Second)
	r.Adopt(now, hold, 475)
	return r, hold
}

// driveMixed binds for d with calls of the given priorities every step.
func driveMixed(r *rateController, now time.Time, d time.Duration, ps ...Priority) time.Time {
	for end := now.Add(d); now.Before(end); {
		now = now.Add(100 * time.Millisecond)
		for _, p := range ps {
			r.Called(p, now)
		}
		r.Refused(now)
	}
	return now
}

// While live and resync calls share the budget, the rate gets back to the
// estimate as usual and then probes above it by 0.05%/s only, so probes
// (and the Retry-After holds they end in) come minutes apart.
func TestRateProbesGentlyAboveTheEstimateWhileLiveAndResyncMix(t *testing.T) {
	r, now := cutAt500(t)
	now = driveMixed(r, now, 30*time.Second, Live, Resync)
	got := r.Rate(now)
	if got < 500 || got > 500*math.Exp(30*gentleProbe)+1 {
		t.Fatalf("rate after 30 s of mixed traffic = %.1f, want back at the 500 estimate and at most %.1f", got, 500*math.Exp(30*gentleProbe))
	}
	// Resync alone (live quiet) probes at the normal, fast pace again.
	now = driveMixed(r, now, 10*time.Second, Resync)
	if got := r.Rate(now); got < 1000 {
		t.Fatalf("rate after 10 s of resync alone = %.1f, want a doubled limit found (≥ 1000)", got)
	}
}

func TestRateProbesAtTheNormalPaceWithOneKindOfTraffic(t *testing.T) {
	r, now := cutAt500(t)
	now = driveMixed(r, now, 10*time.Second, Live)
	if got := r.Rate(now); got < 1000 {
		t.Fatalf("rate after 10 s of live traffic alone = %.1f, want ≥ 1000 (a doubled limit found within 10 s)", got)
	}
}

// The probing pace grows with the time spent probing, not with wall time:
// binding again after a quiet minute does not leap.
func TestRateDoesNotLeapAfterAQuietSpell(t *testing.T) {
	r, now := cutAt500(t)
	now = driveMixed(r, now, time.Second, Live)
	before := r.Rate(now)
	now = now.Add(time.Minute)
	now = driveMixed(r, now, time.Second, Live)
	if got := r.Rate(now); got > before*1.1 {
		t.Fatalf("rate jumped from %.1f to %.1f in one second of binding after a quiet minute", before, got)
	}
}

// A slow-start halving may land far below the limit: no gentle probing
// until a cut has estimated the limit.
func TestRateProbesAtTheNormalPaceAfterTheSlowStartHalving(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	now = driveMixed(r, now, 3*time.Second, Live, Resync)
	halved := r.Congested(now, now.Add(time.Second))
	now = driveMixed(r, now.Add(time.Second), 10*time.Second, Live, Resync)
	if got := r.Rate(now); got < 1.5*halved {
		t.Fatalf("rate 10 s after the slow-start halving to %.1f = %.1f, want the normal probing pace (≥ %.1f)", halved, got, 1.5*halved)
	}
}

// Binding for an hour without a 429 (a rate that ran away grew past any
// limiter's range) ends at MaxRate, with bursts within MaxBurst.
func TestRateStaysWithinLimits(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(fromFifty, now)
	now = drive(r, now, time.Hour)
	if got := r.Rate(now); got != MaxRate {
		t.Fatalf("rate after an hour of slow start = %v; want MaxRate %v", got, MaxRate)
	}
	for _, cfg := range []Config{{LiveShare: 0.9}, {Burst: MaxBurst, LiveShare: 0.9}} {
		cfg = cfg.WithDefaults()
		for _, p := range []Priority{Live, Resync} {
			if b := cfg.burstFor(MaxRate, p); b < 1 || b > MaxBurst {
				t.Fatalf("burst at MaxRate for %v with %+v = %d; want within [1, %d]", p, cfg, b, MaxBurst)
			}
		}
	}
	// A rate another process published with its hold is clamped too.
	for _, c := range []struct{ give, want float64 }{{1e300, MaxRate}, {math.Inf(1), MaxRate}, {1e-13, minRate}} {
		now = now.Add(time.Minute)
		r.Adopt(now, now.Add(time.Second), c.give)
		if got := r.Rate(now); got != c.want {
			t.Fatalf("rate after adopting %v = %v; want %v", c.give, got, c.want)
		}
	}
}

// A configured rate below the learner's floor stays the ceiling after a
// 429: cuts never raise it.
func TestRateConfiguredBelowLearningFloor(t *testing.T) {
	now := time.Unix(0, 0)
	r := newRateController(Config{Rate: 0.01}.WithDefaults(), now)
	if got := r.Congested(now, now.Add(time.Second)); got > 0.01 {
		t.Fatalf("rate after a 429 with rate 0.01 configured = %v; want at most 0.01", got)
	}
	now = now.Add(time.Minute)
	r.Adopt(now, now.Add(time.Second), 5)
	if got := r.Rate(now); got > 0.01 {
		t.Fatalf("rate after adopting 5/s with rate 0.01 configured = %v; want at most 0.01", got)
	}
}
