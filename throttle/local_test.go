package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/throttle"
)

// faultyLimiter is a MemoryLimiter whose operations fail while their flag
// is set, like a state store that cannot be reached.
type faultyLimiter struct {
	*throttle.MemoryLimiter
	failTake, failProbe, failHeld atomic.Bool
}

var errStoreDown = errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")

func (l *faultyLimiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	if l.failTake.Load() {
		return 0, 0, errStoreDown
	}
	return l.MemoryLimiter.Take(ctx, name, rate, burst, n)
}

func (l *faultyLimiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if l.failProbe.Load() {
		return false, errStoreDown
	}
	return l.MemoryLimiter.TryProbe(ctx, name, owner, ttl)
}

func (l *faultyLimiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	if l.failHeld.Load() {
		return time.Time{}, 0, errStoreDown
	}
	return l.MemoryLimiter.HeldUntil(ctx, name)
}

// checkLocal asserts err says "not sent, local failure" and nothing else:
// no *sink.Error a caller could take for the API's answer.
func checkLocal(t *testing.T, ctx context.Context, err error, what string) {
	t.Helper()
	var se *sink.Error
	switch {
	case err == nil:
		t.Fatalf("%s: no error", what)
	case !errors.Is(err, sink.ErrLocal):
		t.Fatalf("%s: %v; want it to wrap sink.ErrLocal", what, err)
	case !errors.Is(err, errStoreDown):
		t.Fatalf("%s: %v; want it to wrap the limiter's error", what, err)
	case errors.As(err, &se):
		t.Fatalf("%s: %v is a *sink.Error (op %q, retryable %v); want a local failure only", what, err, se.Op, se.Retryable)
	case sink.Classify(ctx, err).Class != sink.ClassLocal:
		t.Fatalf("%s: classified %q; want %q", what, sink.Classify(ctx, err).Class, sink.ClassLocal)
	}
}

// A limiter that cannot take a token fails the call as local: never sent,
// so neither an API failure nor a reason to hold, cut or probe. When the
// limiter is back, calls go straight through.
func TestLimiterFailureIsLocal(t *testing.T) {
	t.Parallel()
	lim := &faultyLimiter{MemoryLimiter: throttle.NewMemoryLimiter(nil)}
	api := &scriptedSink{}
	reg := prometheus.NewRegistry()
	cfg := throttle.Config{OutageFailures: 2, InitialLimit: 4}
	s, err := throttle.New(api, cfg, throttle.Options{Name: "api", Limiter: lim, Logger: quiet, Metrics: throttle.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	ctx := context.Background()
	lim.failTake.Store(true)
	for i := range 20 {
		checkLocal(t, ctx, s.Update(ctx, "r", record(i)), "call while the limiter fails")
	}
	if n := len(api.arrivals()); n != 0 {
		t.Fatalf("%d calls reached the API without a rate token", n)
	}
	if n := counter(t, reg, "eventsync_throttle_calls_total", "result", "local"); n != 20 {
		t.Fatalf("calls counted as local = %v; want 20", n)
	}
	lim.failTake.Store(false)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Update(short, "r", record(0)); err != nil {
		t.Fatalf("first call after the limiter came back: %v", err)
	}
	if n := outageHolds(t, reg); n != 0 {
		t.Fatalf("%v outage holds after limiter failures; want 0", n)
	}
	if until, _, _ := lim.HeldUntil(ctx, "api"); !until.IsZero() {
		t.Fatalf("the cluster is held until %v after limiter failures; want no hold", until)
	}
	if after := s.Stats(); after.Limit != before.Limit || after.Rate != before.Rate || after.RateCuts != 0 {
		t.Fatalf("limiter failures moved the throttle: %+v before, %+v after", before, after)
	}
}

// While an outage is suspected, a probe lease that cannot be taken fails
// the call as local too.
func TestProbeLeaseFailureIsLocal(t *testing.T) {
	t.Parallel()
	lim := &faultyLimiter{MemoryLimiter: throttle.NewMemoryLimiter(nil)}
	api := &scriptedSink{fail: func(int) error {
		return &sink.Error{Op: "update", Status: http.StatusServiceUnavailable, Retryable: true}
	}}
	s, err := throttle.New(api, throttle.Config{OutageFailures: 1, ProbeInterval: 20 * time.Millisecond},
		throttle.Options{Name: "api", Limiter: lim, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var se *sink.Error
	if err := s.Update(ctx, "r", record(0)); !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
		t.Fatalf("first call = %v; want the API's 503", err)
	}
	lim.failProbe.Store(true)
	checkLocal(t, ctx, s.Update(ctx, "r", record(1)), "call during an outage while the probe lease cannot be taken")
	if n := len(api.arrivals()); n != 1 {
		t.Fatalf("%d calls reached the API; want only the first", n)
	}
}

// A long refusal while the hold cannot be read (another process's hold,
// a limiter failing to answer HeldUntil) is waited out, but it is not the
// rate binding: the learner must not grow on it.
func TestUnreadableHoldDoesNotTeachTheRate(t *testing.T) {
	t.Parallel()
	lim := &faultyLimiter{MemoryLimiter: throttle.NewMemoryLimiter(nil)}
	api := &scriptedSink{}
	s, err := throttle.New(api, throttle.Config{InitialRate: 50}, throttle.Options{Name: "api", Limiter: lim, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := lim.Hold(ctx, "api", time.Now().Add(time.Second), 0); err != nil {
		t.Fatal(err)
	}
	lim.failHeld.Store(true)
	if err := s.Update(ctx, "r", record(0)); err != nil {
		t.Fatalf("call after a hold it could not read: %v", err)
	}
	if rate := s.Stats().Rate; rate != 50 {
		t.Fatalf("rate %v after waiting out a hold the limiter would not show; want the initial 50", rate)
	}
}

// A call the wrapped sink did not send (it says sink.ErrLocal) tells
// nothing about the API: no outage, however many, and a probe that ends
// so neither ends nor extends the outage.
func TestWrappedLocalFailureIsNoOutage(t *testing.T) {
	t.Parallel()
	var local atomic.Bool
	local.Store(true)
	api := &scriptedSink{fail: func(int) error {
		if local.Load() {
			return fmt.Errorf("encode the body: %w: %w", sink.ErrLocal, errors.New("json: unsupported value: NaN"))
		}
		return &sink.Error{Op: "update", Status: http.StatusBadGateway, Retryable: true}
	}}
	reg := prometheus.NewRegistry()
	s, err := throttle.New(api, throttle.Config{OutageFailures: 3, ProbeInterval: 20 * time.Millisecond, InitialLimit: 4},
		throttle.Options{Name: "api", Logger: quiet, Metrics: throttle.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 20 {
		if err := s.Update(ctx, "r", record(i)); !errors.Is(err, sink.ErrLocal) {
			t.Fatalf("call %d = %v; want the sink's local failure", i, err)
		}
	}
	if n := outageHolds(t, reg); n != 0 {
		t.Fatalf("%v outage holds after 20 local failures of the wrapped sink; want 0", n)
	}
	if n := counter(t, reg, "eventsync_throttle_calls_total", "result", "local"); n != 20 {
		t.Fatalf("calls counted as local = %v; want 20", n)
	}
	if lim := s.Stats().Limit; lim != 4 {
		t.Fatalf("concurrency limit %d after local failures; want the initial 4", lim)
	}
	// Now a real outage: three 502s hold once; the probe then fails
	// locally, which must not count as the API failing again.
	local.Store(false)
	for i := range 3 {
		_ = s.Update(ctx, "r", record(i))
	}
	if n := outageHolds(t, reg); n != 1 {
		t.Fatalf("%v outage holds after 3 consecutive 502s with outage_failures 3; want 1", n)
	}
	local.Store(true)
	if err := s.Update(ctx, "r", record(0)); !errors.Is(err, sink.ErrLocal) {
		t.Fatalf("probe = %v; want the local failure", err)
	}
	if n := outageHolds(t, reg); n != 1 {
		t.Fatalf("%v outage holds after a probe that was not sent; want still 1", n)
	}
}

// boundsLimiter is a fast limiter shared with busy peers: it refuses
// every other take for a microsecond, so the rate always looks like the
// bottleneck, and the API never answers 429. It fails like a real adapter
// did when a rate or burst leaves throttle's limits.
type boundsLimiter struct {
	*throttle.MemoryLimiter
	mu                 sync.Mutex
	takes              int
	maxRate            float64
	maxBurst, minBurst int
}

func (l *boundsLimiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.takes++
	l.maxRate, l.maxBurst, l.minBurst = max(l.maxRate, rate), max(l.maxBurst, burst), min(l.minBurst, burst)
	if math.IsNaN(rate) || rate < throttle.MinRate || rate > throttle.MaxRate || burst < 1 || burst > throttle.MaxBurst || n < 1 || n > throttle.MaxBurst {
		return 0, 0, fmt.Errorf("unable to encode rate %v burst %d batch %d", rate, burst, n)
	}
	if l.takes%2 == 0 {
		return 0, time.Microsecond, nil
	}
	return 1, 0, nil
}

// The rate learner, binding for ever and never told to stop by a 429,
// stays within throttle.MaxRate and its burst within MaxBurst, so the
// limiter keeps working (it was the rate that ran away to a burst of
// 2348271757 and failed every take in PostgreSQL).
func TestRunawayRateStaysBounded(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64 // fake time: each reading moves it 10 ms on
	start := time.Unix(1_700_000_000, 0)
	now := func() time.Time { return start.Add(time.Duration(clock.Add(int64(10 * time.Millisecond)))) }
	lim := &boundsLimiter{MemoryLimiter: throttle.NewMemoryLimiter(now), minBurst: math.MaxInt}
	api := &scriptedSink{}
	s, err := throttle.New(api, throttle.Config{InitialRate: 50}, throttle.Options{Name: "api", Limiter: lim, Logger: quiet, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3000 {
		if err := s.Update(ctx, "r", record(i)); err != nil {
			t.Fatalf("call %d, %v into the run: %v (rate learned %v)", i, time.Duration(clock.Load()), err, s.Stats().Rate)
		}
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	t.Logf("%d takes over %v of fake time; highest rate %v, bursts %d..%d", lim.takes, time.Duration(clock.Load()), lim.maxRate, lim.minBurst, lim.maxBurst)
	if lim.maxRate != throttle.MaxRate {
		t.Fatalf("highest rate asked for %v; want the learner to reach throttle.MaxRate %v and stop there", lim.maxRate, throttle.MaxRate)
	}
	if st := s.Stats(); st.Rate != throttle.MaxRate {
		t.Fatalf("learned rate %v; want %v", st.Rate, throttle.MaxRate)
	}
}

// counter returns the value of the counter name whose label is value.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
