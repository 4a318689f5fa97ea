package throttle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/sink"
)

// outageSuffix names the hold that marks an outage (next to the sink's own
// hold, which every Take checks), so other processes know to wait for a
// probe instead of rushing in when it ends.
const outageSuffix = "/outage"

// defaultRateLimitHold is the hold after a 429 without Retry-After.
const defaultRateLimitHold = time.Second

// Options are a Sink's collaborators.
type Options struct {
	// Name is the sink's name: the key of the cluster-wide budget, hold and
	// probe lease, and the metrics label. Required.
	Name string
	// Limiter is the cluster-wide state; nil means a MemoryLimiter, which
	// shares nothing with other processes.
	Limiter Limiter
	// Metrics receive the throttle's numbers; nil means unregistered ones.
	Metrics *Metrics
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Owner identifies this process in probe leases; default host-pid-random.
	Owner string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Sink is a sink.Sink (and sink.Lister and sink.BatchSink, when the
// wrapped sink is one) that throttles every call; see the package
// documentation. A batch call is one call: one token, one slot. Safe for concurrent
// use; it starts no goroutines, so it needs no Close.
type Sink struct {
	next  sink.Sink
	cfg   Config
	name  string
	lim   Limiter
	log   *slog.Logger
	now   func() time.Time
	owner string

	conc *concurrency
	rate *rateController
	res  [2]reservation // rate tokens by priority, taken in batches

	holdMu      sync.Mutex
	holdFetched time.Time
	heldUntil   time.Time // last known end of the cluster hold
	outageUntil time.Time
	warnedAt    time.Time

	outMu       sync.Mutex
	consecutive int       // outage-class failures in a row
	streakStart time.Time // when the first of them ended
	suspect     bool      // an outage was seen: only probes go out
	// suspectChanged is closed and replaced whenever suspect flips, for
	// APIDown's watchers.
	suspectChanged chan struct{}
	probing        bool // a probe of this process is in flight

	limit    prometheus.Gauge
	rateG    prometheus.Gauge
	inFlight [2]prometheus.Gauge
	calls    *prometheus.CounterVec
	wait     [2]prometheus.Observer
	holds    *prometheus.CounterVec
}

var (
	_ sink.Sink           = (*Sink)(nil)
	_ sink.Lister         = (*Sink)(nil)
	_ sink.BatchSink      = (*Sink)(nil)
	_ sink.HealthReporter = (*Sink)(nil)
)

// New wraps next. cfg is defaulted and validated here.
func New(next sink.Sink, cfg Config, opts Options) (*Sink, error) {
	if next == nil {
		return nil, errors.New("throttle: no sink to wrap")
	}
	if opts.Name == "" {
		return nil, errors.New("throttle: sink name is empty; name it so processes share one budget per API")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Limiter == nil {
		opts.Limiter = NewMemoryLimiter(opts.Now)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Owner == "" {
		opts.Owner = defaultOwner()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	m, n := opts.Metrics, opts.Name
	s := &Sink{
		next: next, cfg: cfg, name: n, lim: opts.Limiter, log: opts.Logger, now: opts.Now, owner: opts.Owner,
		conc:           newConcurrency(cfg),
		rate:           newRateController(cfg, opts.Now()),
		suspectChanged: make(chan struct{}),
		limit:          m.limit.WithLabelValues(n), rateG: m.rate.WithLabelValues(n),
		inFlight: [2]prometheus.Gauge{m.inFlight.WithLabelValues(n, Live.String()), m.inFlight.WithLabelValues(n, Resync.String())},
		calls:    m.calls.MustCurryWith(prometheus.Labels{"sink": n}),
		wait:     [2]prometheus.Observer{m.wait.WithLabelValues(n, Live.String()), m.wait.WithLabelValues(n, Resync.String())},
		holds:    m.holds.MustCurryWith(prometheus.Labels{"sink": n}),
	}
	s.conc.atCap = func(most int) {
		s.log.Warn("throttle: more calls than throttle.max_in_flight allows want to run at once; the rest wait for a slot, so a worker.concurrency above it is never reached; raise throttle.max_in_flight, or set it to 0 to follow the worker's concurrency",
			"sink", s.name, "max_in_flight", most)
	}
	s.limit.Set(float64(cfg.InitialLimit))
	for _, reason := range []string{"retry_after", "outage"} {
		s.holds.WithLabelValues(reason) // exported at 0, so alerts see the series from the start
	}
	return s, nil
}

func defaultOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Stats is a snapshot for status pages and benchmarks.
type Stats struct {
	Limit    int     // current concurrency limit of this process
	Rate     float64 // cluster-wide rate this process allows, calls/s; 0 while none is known
	RateCuts int     // congestion episodes that cut the rate
	InFlight [2]int  // by Priority
	// HeldUntil is the end of the cluster hold this process last knew of
	// (it may be in the past); Outage is set while the API is judged down
	// and only probes go out.
	HeldUntil time.Time
	Outage    bool
}

// Stats returns the throttle's current state.
func (s *Sink) Stats() Stats {
	rate, cuts := s.rate.Allowed()
	st := Stats{Limit: s.conc.Limit(), Rate: rate, RateCuts: cuts, InFlight: s.conc.InFlight()}
	s.holdMu.Lock()
	st.HeldUntil = s.heldUntil
	s.holdMu.Unlock()
	s.outMu.Lock()
	st.Outage = s.suspect
	s.outMu.Unlock()
	return st
}

// Create implements sink.Sink.
func (s *Sink) Create(ctx context.Context, r sink.Record) (remoteID string, err error) {
	err = s.do(ctx, func(ctx context.Context) error {
		var e error
		remoteID, e = s.next.Create(ctx, r)
		return e
	})
	return remoteID, err
}

// Update implements sink.Sink.
func (s *Sink) Update(ctx context.Context, remoteID string, r sink.Record) error {
	return s.do(ctx, func(ctx context.Context) error { return s.next.Update(ctx, remoteID, r) })
}

// Delete implements sink.Sink.
func (s *Sink) Delete(ctx context.Context, entity, remoteID string) error {
	return s.do(ctx, func(ctx context.Context) error { return s.next.Delete(ctx, entity, remoteID) })
}

// Lookup implements sink.Sink.
func (s *Sink) Lookup(ctx context.Context, entity, key string) (ids []string, err error) {
	err = s.do(ctx, func(ctx context.Context) error {
		var e error
		ids, e = s.next.Lookup(ctx, entity, key)
		return e
	})
	return ids, err
}

// ErrListUnsupported is returned by List when the wrapped sink cannot list.
var ErrListUnsupported = errors.New("throttle: the wrapped sink does not implement sink.Lister")

// List implements sink.Lister when the wrapped sink does; a whole listing
// counts as one call (it pages sequentially).
func (s *Sink) List(ctx context.Context, entity string, fn func(sink.RemoteRecord) error) error {
	l, ok := s.next.(sink.Lister)
	if !ok {
		return fmt.Errorf("list %s: %w; use a sink that can list (the HTTP sink with a list section)", entity, ErrListUnsupported)
	}
	return s.do(ctx, func(ctx context.Context) error { return l.List(ctx, entity, fn) })
}

// MaxBatch implements sink.BatchSink: the wrapped sink's, 0 (no batch
// calls) when it has no bulk endpoints.
func (s *Sink) MaxBatch(entity string, op sink.Op) int {
	if b, ok := s.next.(sink.BatchSink); ok {
		return b.MaxBatch(entity, op)
	}
	return 0
}

// ErrBatchUnsupported is returned by WriteBatch when the wrapped sink has no
// bulk endpoints.
var ErrBatchUnsupported = errors.New("throttle: the wrapped sink does not implement sink.BatchSink")

// WriteBatch implements sink.BatchSink. The batch is one call (one rate
// token, one slot, at the priority of ctx's stream), judged by the whole
// call's answer; when that succeeded, an item refused with 429 is judged
// as a 429 of the call (the longest Retry-After among them), since the API
// said its limit was reached. Other failures of single items say nothing
// of its health.
func (s *Sink) WriteBatch(ctx context.Context, entity string, op sink.Op, items []sink.BatchItem) ([]sink.BatchResult, error) {
	b, ok := s.next.(sink.BatchSink)
	if !ok {
		return nil, fmt.Errorf("batch %s %s: %w", op, entity, ErrBatchUnsupported)
	}
	var results []sink.BatchResult
	var callErr error
	sent := false
	err := s.do(ctx, func(ctx context.Context) error {
		sent = true
		results, callErr = b.WriteBatch(ctx, entity, op, items)
		if callErr != nil {
			return callErr
		}
		return rateLimitedItem(results)
	})
	if !sent {
		return nil, err // not admitted: a local failure, or ctx ended
	}
	return results, callErr
}

// rateLimitedItem is the 429 among results with the longest Retry-After,
// nil when no item was refused with 429.
func rateLimitedItem(results []sink.BatchResult) error {
	var worst *sink.Error
	for _, r := range results {
		var se *sink.Error
		if errors.As(r.Err, &se) && se.Status == http.StatusTooManyRequests && (worst == nil || se.RetryAfter > worst.RetryAfter) {
			worst = se
		}
	}
	if worst == nil {
		return nil
	}
	return worst
}

// signalOf is what a call of class c tells the concurrency limit.
func signalOf(c sink.Class) signal {
	switch c {
	case sink.ClassOK, sink.ClassClientError:
		return signalOK
	case sink.ClassOverloaded, sink.ClassTimeout, sink.ClassTransport:
		return signalOverload
	}
	return signalNeutral // 429, other 5xx, cancelled, not sent
}

// localError is the error of a call not sent because the limiter failed:
// sink.ErrLocal, so that nobody (the engine's breaker and attempts, this
// throttle's outage detection) takes it for the API failing.
func (s *Sink) localError(what string, err error) error {
	return fmt.Errorf("throttle: %s for sink %q: %w: %w; is the state store reachable?", what, s.name, sink.ErrLocal, err)
}

func (s *Sink) do(ctx context.Context, call func(context.Context) error) error {
	p := PriorityFrom(ctx)
	start := s.now()
	s.rate.Called(p, start)
	probe, err := s.admit(ctx, p)
	s.wait[p].Observe(s.now().Sub(start).Seconds())
	if err != nil {
		if errors.Is(err, sink.ErrLocal) {
			s.calls.WithLabelValues(p.String(), string(sink.ClassLocal)).Inc()
		}
		return err
	}
	s.inFlight[p].Inc()
	began := s.now()
	err = call(ctx)
	end := s.now()
	s.inFlight[p].Dec()
	v := sink.Classify(ctx, err)
	sig := signalOf(v.Class)
	s.calls.WithLabelValues(p.String(), string(v.Class)).Inc()
	s.after(ctx, v, probe, began)
	if sig == signalOverload {
		// A refusal that came back at once would hand its slot to the
		// next call at once, and a ceiling that answers 503 to every call
		// above it would get them as fast as they can be sent: the slot
		// stays taken as long as a call usually takes.
		_ = sleep(ctx, s.conc.latency()-end.Sub(began))
	}
	s.conc.release(p, s.now(), end.Sub(began), sig)
	if sig == signalOK {
		s.rate.Served(end)
	}
	s.limit.Set(float64(s.conc.Limit()))
	rate, _ := s.rate.Allowed()
	s.rateG.Set(rate)
	return err
}

// admit waits for the hold, the outage probe, a rate token and a slot.
func (s *Sink) admit(ctx context.Context, p Priority) (probe bool, err error) {
	for {
		if err := s.waitHold(ctx); err != nil {
			return false, err
		}
		probe, retry, err := s.claimProbe(ctx)
		if err != nil {
			return false, err
		}
		if retry {
			continue
		}
		if !probe {
			held, err := s.takeToken(ctx, p)
			if err != nil {
				return false, err
			}
			if held {
				continue
			}
		}
		if err := s.conc.acquire(ctx, p, s.now()); err != nil {
			if probe {
				s.endProbe(ctx, false)
			}
			return false, err
		}
		// A hold this process learned of while the call waited for a
		// slot (its own 429, most likely) stops it too: a worker's other
		// events wait here, and each freed slot would send one more.
		if !probe && s.heldNow() {
			s.conc.release(p, s.now(), 0, signalNeutral)
			continue
		}
		return probe, nil
	}
}

// heldNow reports whether this process knows of a cluster hold now.
func (s *Sink) heldNow() bool {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	return s.heldUntil.After(s.now())
}

// waitHold sleeps until the cluster-wide hold has ended.
func (s *Sink) waitHold(ctx context.Context) error {
	for {
		until, _ := s.holdEnd(ctx, false)
		now := s.now()
		if !until.After(now) {
			return nil
		}
		if err := sleep(ctx, until.Sub(now)); err != nil {
			return err
		}
	}
}

// holdEnd returns the cluster hold's end, reading it from the limiter at
// most every HoldPoll unless force. A hold another process set after its
// 429 is a congestion signal here too; one set for an outage makes this
// process wait for a probe. When the limiter cannot be read it returns the
// last known end and the limiter's error.
func (s *Sink) holdEnd(ctx context.Context, force bool) (time.Time, error) {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	now := s.now()
	if !force && now.Sub(s.holdFetched) < s.cfg.HoldPoll {
		return s.heldUntil, nil
	}
	s.holdFetched = now
	outage, _, err := s.lim.HeldUntil(ctx, s.name+outageSuffix)
	var until time.Time
	var rate float64
	if err == nil {
		until, rate, err = s.lim.HeldUntil(ctx, s.name)
	}
	if err != nil {
		if ctx.Err() == nil && now.Sub(s.warnedAt) > 10*time.Second {
			s.warnedAt = now
			s.log.Warn("throttle: cannot read the cluster-wide hold; going on with the last known one", "sink", s.name, "err", err)
		}
		return s.heldUntil, err
	}
	if outage.After(now) && outage.After(s.outageUntil) {
		s.outMu.Lock()
		s.setSuspect(true)
		s.outMu.Unlock()
	}
	if until.After(now) && until.After(s.heldUntil) {
		s.dropReserved()
	}
	// A 429's hold, not an outage's: a new one is a congestion here too,
	// and while it lasts a lower rate another process published with it
	// is taken as well, so every process resumes at the same rate.
	if until.After(now) && outage.Before(until) && (until.After(s.heldUntil) || rate > 0) {
		s.rate.Adopt(now, until, rate)
	}
	if !until.After(now) && rate > 0 {
		s.rate.Known(now, rate) // a limit the cluster learned before this process started
	}
	s.outageUntil = outage
	if until.After(s.heldUntil) {
		s.heldUntil = until
	}
	return s.heldUntil, nil
}

// noteHold records a hold this process set.
func (s *Sink) noteHold(until, outage time.Time) {
	s.dropReserved()
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if until.After(s.heldUntil) {
		s.heldUntil = until
	}
	if outage.After(s.outageUntil) {
		s.outageUntil = outage
	}
}

// claimProbe gates calls while an outage is suspected: only the holder of
// the cluster probe lease, one call at a time, goes out. retry asks the
// caller to start over (after a short wait).
func (s *Sink) claimProbe(ctx context.Context) (probe, retry bool, err error) {
	s.outMu.Lock()
	suspect, probing := s.suspect, s.probing
	s.outMu.Unlock()
	if !suspect {
		return false, false, nil
	}
	poll := min(s.cfg.ProbeInterval/4, 250*time.Millisecond)
	if !probing {
		ok, err := s.lim.TryProbe(ctx, s.name+outageSuffix, s.owner, s.cfg.ProbeInterval)
		if err != nil {
			if ctx.Err() != nil {
				return false, false, ctx.Err()
			}
			return false, false, s.localError("take the probe lease", err)
		}
		if ok {
			s.outMu.Lock()
			defer s.outMu.Unlock()
			if !s.suspect {
				return false, false, nil
			}
			if !s.probing {
				s.probing = true
				return true, false, nil
			}
		}
	}
	return false, true, sleep(ctx, poll)
}

// setSuspect records whether an outage is suspected and wakes APIDown's
// watchers when that changes. s.outMu is held.
func (s *Sink) setSuspect(v bool) {
	if s.suspect == v {
		return
	}
	s.suspect = v
	close(s.suspectChanged)
	s.suspectChanged = make(chan struct{})
}

// APIDown implements sink.HealthReporter: the API is judged down while an
// outage is suspected, here or by any process sharing the limiter (only
// probes go out then). A worker follows this judgement instead of keeping
// a breaker count of its own, and lets one event at a time through for the
// probe.
func (s *Sink) APIDown() (down bool, changed <-chan struct{}) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	return s.suspect, s.suspectChanged
}

// endProbe ends this process's probe. On success the outage is over for
// this process and the lease is given up at once, so every other process
// confirms with one probe of its own instead of waiting for the lease.
func (s *Sink) endProbe(ctx context.Context, recovered bool) {
	s.outMu.Lock()
	s.probing = false
	if recovered {
		s.setSuspect(false)
		s.consecutive = 0
	}
	s.outMu.Unlock()
	if recovered {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if _, err := s.lim.TryProbe(ctx, s.name+outageSuffix, s.owner, 0); err != nil {
			s.log.Warn("throttle: cannot give up the probe lease; others probe when it expires", "sink", s.name, "err", err)
		}
		s.log.Info("throttle: API answered the probe; resuming", "sink", s.name)
	}
}

// after reacts to a call's result: a 429 holds the cluster for its
// Retry-After and cuts the rate; an outage holds it for ProbeInterval. A
// call cancelled or not sent judges nothing.
func (s *Sink) after(ctx context.Context, v sink.Verdict, probe bool, began time.Time) {
	now := s.now()
	retryAfter := v.RetryAfter
	switch {
	case v.Class == sink.ClassRateLimited:
		if retryAfter <= 0 {
			retryAfter = defaultRateLimitHold
		}
		until := now.Add(min(retryAfter, s.cfg.MaxHold))
		rate := s.rate.Congested(now, until)
		s.hold(ctx, until, rate, false)
		s.holds.WithLabelValues("retry_after").Inc()
		s.outMu.Lock()
		s.consecutive = 0
		s.outMu.Unlock()
		if probe {
			s.endProbe(ctx, true)
		}
	case v.Class.Outage():
		s.outMu.Lock()
		// A burst of calls refused together (a concurrency ceiling
		// answering 503 to everything in flight) is one overload, which
		// the concurrency limit handles: only calls sent after the streak
		// began count towards an outage.
		switch {
		case s.consecutive == 0:
			s.streakStart, s.consecutive = now, 1
		case began.After(s.streakStart):
			s.consecutive++
		}
		// Nor do refusals that return at once while calls keep
		// succeeding (a concurrency ceiling answering 503 to every call
		// above it, each freed slot sent again at once): an outage also
		// lasts longer than two calls usually take, without a success.
		trip := probe || (!s.suspect && s.consecutive >= s.cfg.OutageFailures && now.Sub(s.streakStart) >= 2*s.conc.latency())
		if trip {
			s.setSuspect(true)
		}
		s.outMu.Unlock()
		if trip {
			until := now.Add(max(s.cfg.ProbeInterval, min(retryAfter, s.cfg.MaxHold)))
			s.hold(ctx, until, 0, true)
			s.holds.WithLabelValues("outage").Inc()
			if !probe {
				s.log.Warn("throttle: API looks down; holding every process and probing", "sink", s.name, "until", until, "result", string(v.Class))
			}
		}
		if probe {
			s.endProbe(ctx, false)
		}
	case v.Class == sink.ClassCanceled || v.Class == sink.ClassLocal:
		if probe {
			s.endProbe(ctx, false)
		}
	default:
		s.outMu.Lock()
		s.consecutive = 0
		s.outMu.Unlock()
		if probe {
			s.endProbe(ctx, true)
		}
	}
}

// hold sets the cluster-wide hold (and the outage mark first, so a process
// that sees the hold also sees why). It outlives the caller's context: a
// cancelled event must not leave other processes uninformed.
func (s *Sink) hold(ctx context.Context, until time.Time, rate float64, outage bool) {
	// This process stops at once, not one round trip later: refusals
	// come back fast, and each freed slot would send another call.
	var o time.Time
	if outage {
		o = until
	}
	s.noteHold(until, o)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var err error
	if outage {
		err = s.lim.Hold(ctx, s.name+outageSuffix, until, 0)
	}
	if err == nil {
		err = s.lim.Hold(ctx, s.name, until, rate)
	}
	if err != nil {
		s.log.Warn("throttle: cannot set the cluster-wide hold; only this process waits", "sink", s.name, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
