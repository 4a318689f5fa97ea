package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/memory"
)

// LeaseTTL is the engine's lease TTL in every run. The engine renews
// leases with a real-time timer at a third of it; at an hour that timer
// never fires within a run (a run takes milliseconds), so leases expire
// only when the simulated clock says so, and the run stays deterministic.
const LeaseTTL = time.Hour

// Options configure one run.
type Options struct {
	Seed uint64
	// Full receives every trace line when not nil (a verbose replay).
	Full io.Writer
	// Keep is how many of the last trace lines a report shows; default 400.
	Keep int
	// MaxSteps bounds each phase; default 4000 for the faulty phase and
	// 40000 for the quiet one.
	MaxSteps int
	// Store returns the state store under test, reading time from now;
	// nil means store/memory. Tests of the simulation itself pass broken
	// stores to see that it notices.
	Store func(now func() time.Time) store.Store
}

// Violation is one broken invariant.
type Violation struct {
	Step   int64
	Kind   string
	Detail string
}

func (v Violation) String() string { return fmt.Sprintf("step %d: %s: %s", v.Step, v.Kind, v.Detail) }

// Result is what one run did and found.
type Result struct {
	Seed       uint64
	Params     string
	Violations []Violation
	Steps      int64
	// Tail is the end of the trace, when an invariant broke.
	Tail  string
	Stats Stats
}

// Failed reports whether an invariant broke.
func (r Result) Failed() bool { return len(r.Violations) > 0 }

// Stats counts what happened in a run.
type Stats struct {
	Messages, Deliveries, Crashes, ClockJumps, Outages, Pauses, Replays int
	// Residual counts zombie writes of crashed workers (see zombieWrite).
	Residual int
	Outcomes map[engine.Result]int
	API      APIStats
}

// params is the run's configuration, drawn from the seed: which faults are
// on and how often (swarm testing: each run enables a different subset,
// so rare combinations get runs of their own).
type params struct {
	workers   int
	capacity  []int
	work      WorkloadParams
	api       APIFaults
	store     StoreFaults
	bus       BusFaults
	crash     float64 // weights of the fault actions per step
	jump      float64
	outage    float64
	pause     float64
	tick      time.Duration
	extra     int // faulty steps after the last publication
	attempts  int
	lookup    bool
	lockedFor time.Duration
	backoff   time.Duration
}

func (p params) String() string {
	return fmt.Sprintf("workers=%d capacity=%v keys=%d versions<=%d delete=%.2f reorder=%.2f dup=%.2f stale=%.2f resync=%.2f poison=%d "+
		"api{refuse=%.2f permanent=%.3f local=%.2f late=%.2f slow=%.2f<=%s} store{before=%.2f after=%.2f slow=%.2f} "+
		"bus{before=%.2f after=%.2f silent=%.2f reorder=%.2f} crash=%.2f jump=%.2f outage=%.2f pause=%.2f tick=%s "+
		"max_attempts=%d lookup_before_create=%t locked_retry=%s backoff=%s",
		p.workers, p.capacity, p.work.Keys, p.work.MaxVersions, p.work.Delete, p.work.Reorder, p.work.Duplicate, p.work.Stale, p.work.Resync, p.work.Poison,
		p.api.Refuse, p.api.Permanent, p.api.Local, p.api.LateError, p.api.Slow, p.api.SlowMax, p.store.Before, p.store.After, p.store.Slow,
		p.bus.Before, p.bus.After, p.bus.Silent, p.bus.Reorder, p.crash, p.jump, p.outage, p.pause, p.tick,
		p.attempts, p.lookup, p.lockedFor, p.backoff)
}

func drawParams(s *Sched) params {
	rng := s.Rand()
	rate := func(lo, hi float64) float64 {
		if !s.Chance(0.5) {
			return 0
		}
		return lo + rng.Float64()*(hi-lo)
	}
	p := params{workers: 1 + rng.IntN(4)}
	for range p.workers {
		p.capacity = append(p.capacity, 1+rng.IntN(4))
	}
	p.work = WorkloadParams{
		Keys:        1 + rng.IntN(6),
		MaxVersions: 1 + rng.IntN(8),
		Delete:      rate(0.1, 0.4),
		Reorder:     rate(0.05, 0.5),
		Duplicate:   rate(0.05, 0.3),
		Stale:       rate(0.2, 0.8),
		Resync:      rate(0.2, 0.8),
		Poison:      rng.IntN(3) * rng.IntN(2),
	}
	p.api = APIFaults{
		Refuse:        rate(0.02, 0.3),
		Local:         rate(0.02, 0.2),
		LateError:     rate(0.02, 0.25),
		Slow:          rate(0.02, 0.3),
		SlowMax:       s.Between(LeaseTTL/4, 3*LeaseTTL),
		RetryAfterMax: LeaseTTL / 10,
	}
	if s.Chance(0.25) {
		p.api.Permanent = 0.005 + rng.Float64()*0.03
	}
	p.store = StoreFaults{Before: rate(0.01, 0.15), After: rate(0.01, 0.15), Slow: rate(0.05, 0.5)}
	p.bus = BusFaults{
		Before: rate(0.01, 0.1), After: rate(0.01, 0.1), Silent: rate(0.01, 0.1), Reorder: rate(0.05, 0.5),
		RedeliverMax: LeaseTTL / 2,
	}
	p.crash = rate(0.05, 0.6)
	p.jump = rate(0.05, 0.3)
	p.outage = rate(0.02, 0.2)
	p.pause = rate(0.05, 0.3)
	p.tick = LeaseTTL / time.Duration(50+rng.IntN(450))
	p.extra = rng.IntN(200)
	p.attempts = []int{1, 2, 3, 5, 8, 25}[rng.IntN(6)]
	p.lookup = s.Chance(0.3)
	p.lockedFor = LeaseTTL / time.Duration(3+rng.IntN(8))
	p.backoff = LeaseTTL / time.Duration(10+rng.IntN(91))
	return p
}

type worker struct {
	idx, gen  int
	id        string
	capacity  int
	applier   *engine.Applier
	alive     bool
	restartAt time.Time
	tasks     []*Task
}

type taskInfo struct {
	w   *worker
	d   *Delivery
	out *engine.Outcome
	// repairing: the lease the task took found its event not newer than
	// the applied version, no newer write in doubt, and a repair pending.
	repairing bool
	// failed counts the injected failures the task met (store calls, API
	// answers).
	failed int
}

// zombieWrite is a write that took effect after its writer's lease was
// taken over. The writer must flag the key for repair (its commit is
// fenced), unless it crashed first: then no client-side protocol can
// know, and the key is a residual the run does not hold against the
// engine.
type zombieWrite struct {
	t *Task
	// failed is the task's failure count when the write landed.
	failed   int
	k        store.Key
	what     string
	reported bool
	closed   bool
}

type evKey struct {
	k store.Key
	v int64
}

type run struct {
	opts  Options
	p     params
	s     *Sched
	tr    *Trace
	st    *FaultStore
	api   *API
	bus   *Bus
	work  *Workload
	next  int // next planned publication
	cfg   engine.Config
	wrk   []*worker
	tasks map[*Task]*taskInfo
	// failures counts the API's retryable failure answers per event (key
	// and version) over all its deliveries; permanent marks events the API
	// answered a permanent error.
	failures  map[evKey]int
	permanent map[evKey]bool
	viol      []Violation
	stats     Stats
	zombies   []*zombieWrite
	// residual keys had a zombie write that its crashed writer could not
	// report: their remote records are not checked at the end.
	residual map[store.Key]bool
}

// Run executes one seeded run: a faulty phase, a quiet phase, and the end
// checks. It stops at the first broken invariant.
func Run(opts Options) Result {
	if opts.Keep == 0 {
		opts.Keep = 400
	}
	tr := NewTrace(opts.Keep, opts.Full)
	s := NewSched(opts.Seed, tr)
	r := &run{
		opts: opts, s: s, tr: tr,
		tasks:     map[*Task]*taskInfo{},
		failures:  map[evKey]int{},
		permanent: map[evKey]bool{},
		residual:  map[store.Key]bool{},
		stats:     Stats{Outcomes: map[engine.Result]int{}},
	}
	r.p = drawParams(s)
	tr.Addf("seed %d: %s", opts.Seed, r.p)
	var inner store.Store
	if opts.Store != nil {
		inner = opts.Store(s.Now)
	} else {
		inner = memory.New(memory.Config{Now: s.Now})
	}
	defer inner.Close()
	r.st = NewFaultStore(s, tr, inner, r)
	r.api = NewAPI(s, tr, r)
	r.bus = NewBus(s, tr)
	r.api.Faults, r.st.Faults, r.bus.Faults = r.p.api, r.p.store, r.p.bus
	r.work = NewWorkload(s, r.p.work)
	if r.p.lookup {
		// Records created before eventsync, which a first sync with
		// lookup_before_create adopts instead of duplicating.
		for _, k := range r.work.Keys {
			if s.Chance(0.3) {
				id := r.api.Seed(k, []byte(`{"legacy":true}`))
				tr.Addf("API holds %s for %s from before eventsync", id, k)
			}
		}
	}
	r.cfg = engine.Config{
		Concurrency:        1,
		LeaseTTL:           LeaseTTL,
		MaxAttempts:        r.p.attempts,
		BackoffBase:        r.p.backoff,
		BackoffMax:         10 * r.p.backoff,
		LockedRetryDelay:   r.p.lockedFor,
		LookupBeforeCreate: r.p.lookup,
		Entities:           []string{Entity},
		Logger:             slog.New(slog.DiscardHandler),
		Now:                s.Now,
		// The engine's delay is jittered from a source the run cannot
		// seed: the run draws its own, as the bus does for retries.
		Sleep: func(context.Context, time.Duration) error { return s.Sleep(s.Between(0, r.p.backoff)) },
	}
	for i := range r.p.workers {
		w := &worker{idx: i, capacity: r.p.capacity[i]}
		r.start(w)
		r.wrk = append(r.wrk, w)
	}

	r.faulty()
	if len(r.viol) == 0 {
		r.quiet()
	}
	if len(r.viol) == 0 {
		r.check()
	}
	for _, err := range s.Shutdown() {
		r.Violation("panic", "%v", err)
	}
	r.stats.API = r.api.Stats
	res := Result{Seed: opts.Seed, Params: r.p.String(), Violations: r.viol, Steps: tr.Steps(), Stats: r.stats}
	if len(r.viol) > 0 {
		res.Tail = tr.Tail()
	}
	return res
}

// start (re)starts w as a new process: a new worker id, a new Applier.
func (r *run) start(w *worker) {
	cfg := r.cfg
	w.id = fmt.Sprintf("w%d.%d", w.idx, w.gen)
	cfg.WorkerID = w.id
	a, err := engine.NewApplier(r.st, r.api, cfg)
	if err != nil {
		panic(fmt.Sprintf("sim: engine config: %v", err))
	}
	w.applier, w.alive = a, true
	w.gen++
}

// faulty runs the workload with faults on until it is published and a
// few more steps have passed.
func (r *run) faulty() {
	limit := int64(r.opts.MaxSteps)
	if limit == 0 {
		limit = 4000
	}
	extra := r.p.extra
	for r.tr.Steps() < limit && len(r.viol) == 0 {
		if r.next >= r.work.Len() {
			if extra == 0 {
				break
			}
			extra--
		}
		if !r.step(true) {
			break
		}
	}
}

// quiet turns every fault off, publishes what is left, restarts crashed
// workers and runs until the bus is empty; then it replays what was
// parked for an API failure (as an operator would once the API is fixed)
// and runs until the bus is empty again.
func (r *run) quiet() {
	r.tr.Addf("quiet: faults off, streams resumed, workers restarted")
	r.api.Faults, r.api.DownUntil = APIFaults{}, time.Time{}
	r.st.Faults = StoreFaults{}
	r.bus.Faults = BusFaults{RedeliverMax: r.bus.Faults.RedeliverMax}
	r.bus.Paused = map[bus.Stream]bool{}
	for r.next < r.work.Len() {
		r.publish()
	}
	for _, w := range r.wrk {
		if !w.alive {
			r.start(w)
			r.tr.Addf("restart %s", w.id)
		}
	}
	limit := int64(r.opts.MaxSteps)
	if limit == 0 {
		limit = 40000
	}
	limit += r.tr.Steps()
	for len(r.viol) == 0 {
		if r.tr.Steps() >= limit {
			r.Violation("no quiescence", "the bus is not empty %d steps after the faults stopped: %v", r.tr.Steps()-limit, r.bus.Counts())
			return
		}
		if r.step(false) {
			continue
		}
		replayed := 0
		for _, m := range r.bus.Messages() {
			if m.state == msgParked && m.Event != nil && !m.Replayed {
				r.bus.Replay(m)
				r.stats.Replays++
				replayed++
			}
		}
		if replayed == 0 {
			return
		}
	}
}

type choice struct {
	weight float64
	do     func()
}

// step takes one step: one task runs to its next yield point, or one
// delivery, publication or fault happens; the clock moves a little. When
// nothing can happen it moves the clock to the next timer, and returns
// false when there is none.
func (r *run) step(faults bool) bool {
	r.tr.Step()
	r.wake()
	var cs []choice
	for _, t := range r.s.Runnable() {
		cs = append(cs, choice{10, func() { r.runTask(t) }})
	}
	for _, w := range r.wrk {
		if !w.alive || len(w.tasks) >= w.capacity {
			continue
		}
		for _, stream := range bus.Streams {
			if r.bus.CanDeliver(stream) {
				cs = append(cs, choice{4, func() { r.deliver(w, stream) }})
			}
		}
	}
	if r.next < r.work.Len() {
		cs = append(cs, choice{3, r.publish})
	}
	if len(cs) == 0 {
		at, ok := r.nextTimer()
		if !ok {
			return false
		}
		r.s.AdvanceTo(at)
		return true
	}
	if faults {
		cs = r.faults(cs)
	}
	total := 0.0
	for _, c := range cs {
		total += c.weight
	}
	x := r.s.Rand().Float64() * total
	pick := cs[len(cs)-1]
	for _, c := range cs {
		if x < c.weight {
			pick = c
			break
		}
		x -= c.weight
	}
	pick.do()
	r.s.Advance(r.s.Between(0, r.p.tick))
	return true
}

// faults adds the fault actions that may happen at this step.
func (r *run) faults(cs []choice) []choice {
	var alive []*worker
	for _, w := range r.wrk {
		if w.alive {
			alive = append(alive, w)
		}
	}
	if len(alive) > 0 && r.p.crash > 0 {
		cs = append(cs, choice{r.p.crash, func() { r.crash(alive[r.s.Rand().IntN(len(alive))]) }})
	}
	if r.p.jump > 0 {
		cs = append(cs, choice{r.p.jump, func() {
			d := r.s.Between(LeaseTTL/2, 2*LeaseTTL)
			r.tr.Addf("clock jumps %s (leases expire)", fmtDur(d))
			r.stats.ClockJumps++
			r.s.Advance(d)
		}})
	}
	if r.p.outage > 0 && !r.s.Now().Before(r.api.DownUntil) {
		cs = append(cs, choice{r.p.outage, func() {
			d := r.s.Between(LeaseTTL/10, 2*LeaseTTL)
			r.api.DownUntil = r.s.Now().Add(d)
			r.tr.Addf("API outage for %s", fmtDur(d))
			r.stats.Outages++
		}})
	}
	if r.p.pause > 0 {
		cs = append(cs, choice{r.p.pause, func() {
			stream := bus.Streams[r.s.Rand().IntN(2)]
			r.bus.Paused[stream] = !r.bus.Paused[stream]
			r.tr.Addf("stream %s paused=%t", stream, r.bus.Paused[stream])
			r.stats.Pauses++
		}})
	}
	return cs
}

// wake lets time-driven things happen: tasks whose sleep ended, delayed
// messages, writes of crashed callers landing, workers restarting.
func (r *run) wake() {
	r.s.Wake()
	r.bus.Wake()
	r.api.LandDue()
	for _, w := range r.wrk {
		if !w.alive && !w.restartAt.After(r.s.Now()) {
			r.start(w)
			r.tr.Addf("restart %s", w.id)
		}
	}
}

func (r *run) nextTimer() (time.Time, bool) {
	var at time.Time
	ok := false
	take := func(t time.Time, has bool) {
		if has && (!ok || t.Before(at)) {
			at, ok = t, true
		}
	}
	take(r.s.NextWake())
	take(r.bus.NextDue())
	take(r.api.NextLanding())
	for _, w := range r.wrk {
		take(w.restartAt, !w.alive)
	}
	return at, ok
}

func (r *run) publish() {
	pl := r.work.plan[r.next]
	r.next++
	m := r.bus.Publish(pl.stream, pl.body, pl.ev, pl.poison)
	r.stats.Messages++
	r.tr.Addf("publish msg %d (%s)", m.ID, m.label())
}

func (r *run) deliver(w *worker, stream bus.Stream) {
	d := r.bus.Deliver(stream, w.id)
	m := d.Message()
	r.stats.Deliveries++
	name := fmt.Sprintf("%s/m%d#%d.%d", w.id, m.ID, d.Attempt(), r.stats.Deliveries)
	t := r.s.Spawn(name, func(ctx context.Context) { r.handle(ctx, w, d) })
	r.tasks[t] = &taskInfo{w: w, d: d}
	w.tasks = append(w.tasks, t)
	r.tr.Addf("deliver msg %d (%s) attempt %d to %s", m.ID, m.label(), d.Attempt(), t.Name)
}

func (r *run) runTask(t *Task) {
	if err := r.s.Run(t); err != nil {
		r.Violation("panic", "%v", err)
	}
	if t.state == taskDone {
		r.finish(t)
	}
}

// finish forgets a task that ended; a delivery it left unsettled is
// redelivered, as the broker does when the consumer's channel closes.
func (r *run) finish(t *Task) {
	info := r.tasks[t]
	r.closeZombies(t)
	delete(r.tasks, t)
	w := info.w
	w.tasks = slices.DeleteFunc(w.tasks, func(x *Task) bool { return x == t })
	if info.d.Open() {
		why := "its handler left it unsettled"
		if t.Dead() {
			why = "its consumer crashed"
		}
		r.bus.Abandon(info.d, why)
	}
}

func (r *run) crash(w *worker) {
	r.tr.Addf("crash %s with %d deliveries in hand", w.id, len(w.tasks))
	r.stats.Crashes++
	w.alive = false
	w.restartAt = r.s.Now().Add(r.s.Between(0, LeaseTTL/4))
	for _, t := range slices.Clone(w.tasks) {
		if err := r.s.Kill(t); err != nil {
			r.Violation("panic", "%v", err)
		}
		r.finish(t)
	}
}

// handle is one delivery's task: the engine applies it, the run checks
// the outcome, and the delivery is settled as the worker does.
func (r *run) handle(ctx context.Context, w *worker, d *Delivery) {
	out := w.applier.Apply(bus.WithStream(ctx, d.Stream()), d.Body(), d.Attempt())
	t := TaskOf(ctx)
	if t.Dead() {
		return
	}
	r.tasks[t].out = &out
	r.stats.Outcomes[out.Result]++
	r.tr.Addf("%s outcome %s %s", t.Name, out.Result, out.Reason)
	r.checkOutcome(r.tasks[t], out)
	d.Result = string(out.Result)
	switch out.Result {
	case engine.ResultLocked:
		d.RetryIn = r.s.Between(r.cfg.LockedRetryDelay/4, r.cfg.LockedRetryDelay)
	case engine.ResultRetried:
		d.RetryIn = max(out.RetryAfter, r.s.Between(r.cfg.BackoffBase/2, 2*r.cfg.BackoffBase))
	}
	if err := Settle(ctx, d, out); err != nil && !t.Dead() {
		r.tr.Addf("%s settling failed: %v", t.Name, err)
	}
}

// checkOutcome checks the engine's verdict on m when it is made.
func (r *run) checkOutcome(info *taskInfo, out engine.Outcome) {
	m := info.d.Message()
	if m.Event == nil {
		if out.Result != engine.ResultParked {
			r.Violation("poison not parked", "msg %d (%s) was %s", m.ID, m.Poison, out.Result)
		}
		return
	}
	e := m.Event
	ek := evKey{e.Key, e.Version}
	switch {
	case acked(out.Result):
		// Acked means applied, found not newer than what is applied, or
		// older than a write in doubt: the store must say so. (The
		// event's own intent is no evidence.)
		st, _ := r.st.State(e.Key)
		var ok bool
		switch out.Result {
		case engine.ResultSuperseded:
			ok = st.AppliedVersion > e.Version || st.Intent != nil && st.Intent.Version > e.Version
		case engine.ResultStale:
			ok = st.AppliedVersion > e.Version
		default:
			ok = st.AppliedVersion >= e.Version
		}
		if !ok {
			r.Violation("acked but not applied", "msg %d (%s v%d) %s, but the store has %s", m.ID, e.Key, e.Version, out.Result, fmtState(st))
		}
	case out.Result == engine.ResultParked:
		switch {
		case out.Reason == "":
			r.Violation("parked without a reason", "msg %d (%s v%d)", m.ID, e.Key, e.Version)
		case r.permanent[ek]:
		case strings.HasPrefix(out.Reason, "gave up") && r.failures[ek] >= r.cfg.MaxAttempts:
		default:
			kind, what := "parked without cause", ""
			switch {
			case info.repairing:
				kind, what = "repair parked without cause", " while repairing the key"
			case errors.Is(out.Err, sink.ErrNotFound):
				kind, what = "parked on a 404", " on a record gone since the lookup"
			}
			r.Violation(kind, "msg %d (%s v%d) parked%s with %d API failures answered for it (max_attempts %d, delivery attempt %d): %s",
				m.ID, e.Key, e.Version, what, r.failures[ek], r.cfg.MaxAttempts, info.d.Attempt(), out.Reason)
		}
	}
}

// Expiry implements Observer.
func (r *run) Expiry(t *Task, k store.Key) (time.Time, bool) { return r.st.Expiry(t, k) }

// ZombieWrite implements Observer.
func (r *run) ZombieWrite(t *Task, k store.Key, what string) {
	z := &zombieWrite{t: t, k: k, what: what}
	if info := r.tasks[t]; info != nil {
		z.failed = info.failed
	}
	r.zombies = append(r.zombies, z)
	if t.state == taskDone {
		r.closeZombies(t) // a write on the wire of a crashed worker
	}
}

// Acquired implements StoreObserver.
func (r *run) Acquired(t *Task, k store.Key, version int64, st store.State) {
	info := r.tasks[t]
	if info == nil {
		return
	}
	superseded := st.Intent != nil && st.Intent.Version > version && st.Intent.Version > st.AppliedVersion
	info.repairing = !superseded && version <= st.AppliedVersion && st.RepairNeeded
}

// StoreFailed implements StoreObserver.
func (r *run) StoreFailed(t *Task) {
	if info := r.tasks[t]; info != nil {
		info.failed++
	}
}

// MarkedRepair implements StoreObserver.
func (r *run) MarkedRepair(t *Task, k store.Key) {
	for _, z := range r.zombies {
		if z.t == t && z.k == k {
			z.reported = true
		}
	}
}

// closeZombies judges t's zombie writes once t ended.
func (r *run) closeZombies(t *Task) {
	for _, z := range r.zombies {
		if z.t != t || z.closed {
			continue
		}
		z.closed = true
		switch {
		case z.reported:
		case t.Dead():
			r.residual[z.k] = true
			r.stats.Residual++
			r.tr.Addf("residual: %s by %s took effect after %s was taken over, and its worker crashed before it could flag the key", z.what, t.Name, z.k)
		default:
			info := r.tasks[t]
			how, kind := "", "zombie write not repaired"
			if info.out != nil {
				how = fmt.Sprintf(" (outcome %s: %s)", info.out.Result, info.out.Reason)
			}
			if info.failed > z.failed {
				// A store call or an API call failed after the write
				// landed; the engine then never learns its lease was lost.
				kind = "zombie write not repaired after a failure"
			}
			r.Violation(kind, "%s by %s took effect after %s was taken over, and it ended without flagging the key for repair%s", z.what, t.Name, z.k, how)
		}
	}
}

// Writer implements Observer.
func (r *run) Writer(t *Task, k store.Key) WriterStatus { return r.st.Writer(t, k) }

// Tombstone implements Observer.
func (r *run) Tombstone(t *Task, k store.Key) int64 {
	if info := r.tasks[t]; info != nil {
		if e := info.d.Message().Event; e != nil && e.Key == k && e.Op == event.OpDelete {
			return e.Version
		}
	}
	return 0
}

// Answered implements Observer: it counts the API's answers per event.
func (r *run) Answered(t *Task, op string, k store.Key, err error) {
	info := r.tasks[t]
	if err == nil || info == nil {
		return
	}
	info.failed++
	if info.d.Message().Event == nil {
		return
	}
	e := info.d.Message().Event
	ek := evKey{e.Key, e.Version}
	switch c := sink.Classify(context.Background(), err).Class; {
	case c == sink.ClassLocal || c == sink.ClassCanceled:
	case c == sink.ClassClientError:
		if !errors.Is(err, sink.ErrNotFound) {
			r.permanent[ek] = true
		}
	default:
		r.failures[ek]++
	}
}

// Violation implements Observer.
func (r *run) Violation(kind, format string, args ...any) {
	v := Violation{Step: r.tr.Steps(), Kind: kind, Detail: fmt.Sprintf(format, args...)}
	r.viol = append(r.viol, v)
	r.tr.Addf("VIOLATION %s: %s", kind, v.Detail)
}

// check verifies the end state once the run is quiet.
func (r *run) check() {
	if r.api.Pending() {
		r.Violation("writes still on the wire", "after the run")
	}
	for _, m := range r.bus.Messages() {
		switch {
		case m.state != msgAcked && m.state != msgParked:
			r.Violation("lost", "msg %d (%s) is %s at the end", m.ID, m.label(), m.state)
		case m.Event == nil && m.state != msgParked:
			r.Violation("poison not parked", "msg %d (%s) is %s", m.ID, m.Poison, m.state)
		case m.Event != nil && m.state == msgParked && !m.Replayed:
			r.Violation("parked at the end", "msg %d (%s): %s", m.ID, m.label(), m.ParkReason)
		}
	}
	known := map[store.Key]bool{}
	for _, k := range r.work.Keys {
		known[k] = true
		newest := r.work.Newest(k)
		recs := r.api.Records(k)
		st, _ := r.st.State(k)
		if r.residual[k] {
			if st.AppliedVersion != newest.Version || st.Deleted != (newest.Op == event.OpDelete) {
				r.Violation("store not converged", "%s: newest is v%d %s, the store has %s", k, newest.Version, newest.Op, fmtState(st))
			}
			continue
		}
		switch {
		case newest.Op == event.OpDelete && len(recs) > 0:
			r.Violation("not converged", "%s: newest is a delete (v%d), the API holds %d record(s), the first at v%d", k, newest.Version, len(recs), recs[0].Version)
		case newest.Op == event.OpUpsert && len(recs) != 1:
			r.Violation("not converged", "%s: newest is v%d, the API holds %d records", k, newest.Version, len(recs))
		case newest.Op == event.OpUpsert && (!recs[0].Equal(newest.Data) || recs[0].Version != newest.Version):
			r.Violation("not converged", "%s: newest is v%d %s, the API holds v%d %s", k, newest.Version, newest.Data, recs[0].Version, recs[0].Data)
		case st.AppliedVersion != newest.Version || st.Deleted != (newest.Op == event.OpDelete):
			r.Violation("store not converged", "%s: newest is v%d %s, the store has %s", k, newest.Version, newest.Op, fmtState(st))
		case newest.Op == event.OpUpsert && st.RemoteID != recs[0].ID:
			r.Violation("store not converged", "%s: the store maps it to %q, the API holds %s", k, st.RemoteID, recs[0].ID)
		case st.Intent != nil:
			r.Violation("write left in doubt", "%s: %s", k, fmtState(st))
		case st.RepairNeeded:
			r.Violation("repair left pending", "%s: %s", k, fmtState(st))
		}
	}
	for _, k := range r.api.Keys() {
		if !known[k] {
			r.Violation("unexpected record", "the API holds %v for %s, which no event created", r.api.Records(k), k)
		}
	}
}
