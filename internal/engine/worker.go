package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// Worker consumes the configured streams and applies every delivery with
// up to Concurrency events in flight. It honours pause flags from the
// control plane and stops pulling while its circuit breaker is open.
type Worker struct {
	bus     bus.Bus
	store   store.Store
	applier *Applier
	cfg     Config
	metrics *Metrics
	breaker *breaker
	tracer  trace.Tracer              // nil: tracing off
	started atomic.Pointer[time.Time] // set by Run, read by Status from any goroutine
	lags    lags                      // recent end-to-end lags, for the heartbeat

	slots chan struct{}
	// keys makes events of one key wait for each other in memory.
	keys *keyQueue
	// streamSlots caps one stream's share of slots (resync only); taken
	// before a shared slot, so a capped stream never holds a shared slot
	// while it waits.
	streamSlots map[bus.Stream]chan struct{}
	inFlight    map[bus.Stream]*atomic.Int64
	done        map[bus.Stream]*atomic.Int64
	resultsM    sync.Mutex
	results     map[string]int64

	pausedM sync.Mutex
	paused  map[bus.Stream]bool
	// pauseChanged[s] is closed and replaced whenever s's pause flag flips.
	pauseChanged map[bus.Stream]chan struct{}
	consuming    map[bus.Stream]*atomic.Bool
	// unacked[s] counts what the broker handed s's latest subscription,
	// where the adapter counts it (bus.UnackedCounter), for heartbeats.
	unacked map[bus.Stream]*atomic.Pointer[bus.UnackedCounter]

	// rate sampling for heartbeats, touched only by controlLoop
	lastSampleAt time.Time
	lastSample   map[bus.Stream]int64
	rates        map[bus.Stream]float64
	ratesM       sync.Mutex
}

// NewWorker validates cfg and wires a worker. m may be nil (no metrics
// exported); pass NewMetrics(registry) to export them.
func NewWorker(b bus.Bus, st store.Store, sk sink.Sink, cfg Config, m *Metrics) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if m == nil {
		m = NewMetrics(nil)
	}
	// Writes of concurrently leased keys share the sink's batch calls when
	// it has bulk endpoints.
	applier, err := NewApplier(traced(st, batched(sk, cfg, m), cfg))
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, errors.New("engine: bus is required")
	}
	// The sink may judge the API's health for the fleet (the throttle);
	// then the breaker follows it instead of counting on its own.
	health, _ := sk.(sink.HealthReporter)
	w := &Worker{
		bus: b, store: st, applier: applier, cfg: cfg,
		metrics:      m,
		breaker:      newBreaker(cfg.Breaker, cfg.Now, health),
		tracer:       cfg.tracer(),
		slots:        make(chan struct{}, cfg.Concurrency),
		streamSlots:  map[bus.Stream]chan struct{}{bus.Resync: make(chan struct{}, cfg.resyncSlots())},
		inFlight:     map[bus.Stream]*atomic.Int64{},
		done:         map[bus.Stream]*atomic.Int64{},
		consuming:    map[bus.Stream]*atomic.Bool{},
		unacked:      map[bus.Stream]*atomic.Pointer[bus.UnackedCounter]{},
		results:      map[string]int64{},
		paused:       map[bus.Stream]bool{},
		pauseChanged: map[bus.Stream]chan struct{}{},
	}
	if w.metrics == nil {
		w.metrics = NewMetrics(nil)
	}
	// Waiting deliveries hold prefetch: one key may take a quarter.
	w.keys = newKeyQueue(cfg.Prefetch/4, w.metrics.waiting)
	for _, s := range cfg.Streams {
		w.inFlight[s] = new(atomic.Int64)
		w.done[s] = new(atomic.Int64)
		w.consuming[s] = new(atomic.Bool)
		w.unacked[s] = new(atomic.Pointer[bus.UnackedCounter])
	}
	return w, nil
}

// Metrics exposes the collectors, e.g. to feed sink latency.
func (w *Worker) Metrics() *Metrics { return w.metrics }

// Run consumes until ctx is cancelled, then stops pulling, lets in-flight
// events finish within ShutdownGrace (cancelling their calls after it, so
// they are released back to the queue) and returns.
func (w *Worker) Run(ctx context.Context) error {
	started := w.cfg.Now()
	w.started.Store(&started)
	defer w.metrics.breaker.follow(w.breaker.State)()
	// Handlers outlive ctx by the grace period so that a SIGTERM does not
	// abort API calls halfway.
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()

	if err := w.pollControl(ctx); err != nil {
		return err
	}
	var handlers sync.WaitGroup
	var loops sync.WaitGroup
	errs := make(chan error, len(w.cfg.Streams)+2)
	loops.Add(1)
	go func() {
		defer loops.Done()
		w.controlLoop(ctx)
	}()
	for _, s := range w.cfg.Streams {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := w.consume(ctx, handlerCtx, s, &handlers); err != nil {
				errs <- err
			}
		}()
	}
	loops.Wait()

	drained := make(chan struct{})
	go func() {
		handlers.Wait()
		close(drained)
	}()
	grace := time.NewTimer(w.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-drained:
	case <-grace.C:
		w.cfg.Logger.Warn("shutdown grace period over; cancelling in-flight calls, their events go back to the queue", "grace", w.cfg.ShutdownGrace)
		cancelHandlers()
		<-drained
	}
	w.heartbeat(context.Background(), 0)
	close(errs)
	return errors.Join(collect(errs)...)
}

func collect(ch <-chan error) []error {
	var out []error
	for err := range ch {
		out = append(out, err)
	}
	return out
}

// consume runs one stream: subscribe while not paused, hand deliveries to
// handlers while the breaker allows, unsubscribe on pause.
func (w *Worker) consume(ctx, handlerCtx context.Context, stream bus.Stream, handlers *sync.WaitGroup) error {
	log := w.cfg.Logger.With("stream", string(stream))
	for ctx.Err() == nil {
		if paused, changed := w.isPaused(stream); paused {
			w.metrics.paused.WithLabelValues(string(stream)).Set(1)
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			}
			continue
		}
		w.metrics.paused.WithLabelValues(string(stream)).Set(0)
		sub, err := w.bus.Subscribe(ctx, stream, bus.SubscribeOptions{Prefetch: w.cfg.Prefetch})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error("subscribe failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
			continue
		}
		w.consuming[stream].Store(true)
		if c, ok := sub.(bus.UnackedCounter); ok {
			// Kept after Close: it counts down to 0 as the rest settle.
			w.unacked[stream].Store(&c)
		}
		log.Info("consuming")
		err = w.pump(ctx, handlerCtx, stream, sub, handlers)
		w.consuming[stream].Store(false)
		if cerr := sub.Close(); cerr != nil {
			log.Warn("closing subscription", "err", cerr)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// pump forwards deliveries to handlers until ctx ends or the stream pauses.
func (w *Worker) pump(ctx, handlerCtx context.Context, stream bus.Stream, sub bus.Subscription, handlers *sync.WaitGroup) error {
	deliveries := sub.Deliveries()
	for {
		paused, changed := w.isPaused(stream)
		if paused {
			w.cfg.Logger.Info("stream paused; stopped pulling", "stream", string(stream))
			return nil
		}
		if err := w.breaker.WaitPull(ctx); err != nil {
			return nil
		}
		var d bus.Delivery
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			continue
		case d, ok = <-deliveries:
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("subscription to %s ended unexpectedly", stream)
		}
		// A slot, and the breaker's leave, are taken only with an event in
		// hand: a stream waiting for its next event must not hold either
		// while the other stream's events wait (with one slot, or a
		// half-open breaker, they would wait for ever). The event waits here
		// for its turn.
		if !w.acquireSlot(ctx, stream, changed) {
			w.handBack(ctx, stream, d)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		probe, err := w.breaker.Admit(ctx, changed)
		if err != nil {
			w.releaseSlot(stream)
			w.handBack(ctx, stream, d)
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		handlers.Add(1)
		w.begin(stream)
		since := w.cfg.Now()
		go func() {
			defer handlers.Done()
			// The task is built here: captured whole, it would be
			// allocated for every event.
			w.serve(ctx, handlerCtx, task{stream: stream, d: d, probe: probe, since: since})
		}()
	}
}

// task is a delivery a handler works on, holding a slot.
type task struct {
	stream bus.Stream
	d      bus.Delivery
	probe  bool      // the breaker's half-open probe
	since  time.Time // when the worker received it
	// held is set for a delivery that waited for its key: its handler
	// holds the key already, and ev is parsed.
	held bool
	ev   event.Event
	// first is when the oldest version of the key it stands for was
	// received (waiter.first); zero: since.
	first time.Time
	// debounced is set once it waited out its debounce window.
	debounced bool
}

// waiter is t as a delivery waiting for its key, parsed as ev.
func (t task) waiter(ev event.Event) waiter {
	return waiter{stream: t.stream, d: t.d, ev: ev, since: t.since, first: t.first}
}

// handled is what a handler does once handle returns.
type handled struct {
	key store.Key
	// holds: the handler holds key and must hand it on (handOn).
	holds bool
	// debounce: it holds key, and self waits out its debounce window
	// before it is applied (debounceWait).
	debounce bool
	self     waiter
}

// begin counts a task of stream in flight; it holds a slot.
func (w *Worker) begin(stream bus.Stream) {
	w.inFlight[stream].Add(1)
	w.metrics.inFlight.WithLabelValues(string(stream)).Inc()
}

// end gives back t's slot.
func (w *Worker) end(t task) {
	w.inFlight[t.stream].Add(-1)
	w.metrics.inFlight.WithLabelValues(string(t.stream)).Dec()
	w.releaseSlot(t.stream)
}

// serve handles t and then, while its handler holds t's key, the
// deliveries that waited for that key, each with a slot and the breaker's
// leave of its own (the pump's rules). ctx stops taking new ones on (the
// rest are handed back); handlerCtx bounds the work on each.
func (w *Worker) serve(ctx, handlerCtx context.Context, t task) {
	for {
		h := w.handleTraced(handlerCtx, t)
		w.end(t)
		if !h.holds {
			return
		}
		var ok bool
		if h.debounce {
			if t, ok = w.debounceWait(ctx, h.key, h.self); ok {
				continue
			}
		}
		if t, ok = w.handOn(ctx, h.key); !ok {
			return
		}
	}
}

// handOn takes on the next delivery waiting for key, which the caller
// held; false when none waits (key is free then). A waiting delivery that
// cannot start (the worker stops, its stream paused) is handed back.
func (w *Worker) handOn(ctx context.Context, key store.Key) (task, bool) {
	for {
		next := w.keys.handOn(key)
		if next == nil {
			return task{}, false
		}
		if t, ok := w.resume(ctx, next); ok {
			return t, true
		}
		w.handBack(ctx, next.stream, next.d)
	}
}

// resume gives wt, a delivery whose handler holds its key, a slot and the
// breaker's leave again (the pump's rules); false when it cannot start
// (the worker stops, its stream paused): the caller hands it back.
func (w *Worker) resume(ctx context.Context, wt *waiter) (task, bool) {
	paused, changed := w.isPaused(wt.stream)
	// (acquireSlot may pick a free slot over an ended ctx.)
	if ctx.Err() != nil || paused || !w.acquireSlot(ctx, wt.stream, changed) {
		return task{}, false
	}
	probe, err := w.breaker.Admit(ctx, changed)
	if err != nil {
		w.releaseSlot(wt.stream)
		return task{}, false
	}
	w.begin(wt.stream)
	return task{stream: wt.stream, d: wt.d, probe: probe, since: wt.since, held: true, ev: wt.ev, first: wt.first}, true
}

// debounceWait waits, holding key but no slot and no leave of the
// breaker's, until self's debounce window has passed, so that the newer
// versions of key arriving meanwhile queue behind it. Then either a newer
// version waits (self yields to it: false, the caller hands the key on,
// and only the newest costs a call), or self resumes (true). When the
// worker stops or self's stream pauses first, self is handed back (false:
// the caller's handOn hands back the key's waiters too).
func (w *Worker) debounceWait(ctx context.Context, key store.Key, self waiter) (task, bool) {
	gauge := w.metrics.debouncing.WithLabelValues(string(self.stream))
	gauge.Inc()
	defer gauge.Dec()
	timer := time.NewTimer(self.received().Add(w.cfg.debounceFor(key.Entity)).Sub(w.cfg.Now()))
	defer timer.Stop()
	for waiting := true; waiting; {
		paused, changed := w.isPaused(self.stream)
		if paused || ctx.Err() != nil {
			w.handBack(ctx, self.stream, self.d)
			return task{}, false
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-timer.C:
			waiting = false
		}
	}
	if w.keys.yieldToNewer(key, self) {
		return task{}, false
	}
	t, ok := w.resume(ctx, &self)
	if !ok {
		w.handBack(ctx, self.stream, self.d)
	}
	t.debounced = true
	return t, ok
}

// acquireSlot takes the stream's own slot (when it is capped) and then a
// shared one; false when ctx ends or the pause flags change first.
func (w *Worker) acquireSlot(ctx context.Context, stream bus.Stream, changed <-chan struct{}) bool {
	own := w.streamSlots[stream]
	if own != nil {
		select {
		case <-ctx.Done():
			return false
		case <-changed:
			return false
		case own <- struct{}{}:
		}
	}
	select {
	case <-ctx.Done():
	case <-changed:
	case w.slots <- struct{}{}:
		return true
	}
	if own != nil {
		<-own
	}
	return false
}

func (w *Worker) releaseSlot(stream bus.Stream) {
	<-w.slots
	if own := w.streamSlots[stream]; own != nil {
		<-own
	}
}

// handBack returns a delivery that was pulled but will not be handled
// (the stream paused or the worker is stopping).
func (w *Worker) handBack(ctx context.Context, stream bus.Stream, d bus.Delivery) {
	if err := d.Release(context.WithoutCancel(ctx)); err != nil {
		w.cfg.Logger.Warn("handing back a delivery failed; the broker will redeliver it", "stream", string(stream), "err", err)
	}
}

// handle applies t's delivery and settles it according to the outcome.
// A delivery of a key another handler holds is queued behind it,
// unsettled (holds false): that handler takes it on. One of a debounced
// entity received less than its window ago is not applied yet
// (debounce): its handler waits, holding the key.
func (w *Worker) handle(ctx context.Context, t task) handled {
	ev, err := w.parse(t)
	if err != nil {
		w.settle(ctx, t, invalid(err))
		return handled{}
	}
	h := handled{key: store.Key{Entity: ev.Entity, Key: ev.Key}, holds: true}
	if !t.held {
		switch w.keys.enter(h.key, t.waiter(ev)) {
		case entryQueued:
			w.notYet(ctx, t, "queued behind its key")
			return handled{key: h.key}
		case entryFull:
			// As for a key another process holds: the broker's shortest
			// retry tier.
			w.settle(ctx, t, Outcome{Result: ResultLocked, Delay: jitter(w.cfg.LockedRetryDelay),
				Reason: "entity busy in this worker, and too many of its events wait already", Key: h.key})
			return handled{key: h.key}
		}
	}
	self := t.waiter(ev)
	if !t.debounced && w.debouncing(self) {
		// Its key's newer versions, if any come within the window, queue
		// behind it meanwhile.
		w.notYet(ctx, t, "debounced")
		h.debounce, h.self = true, self
		return h
	}
	if w.keys.yieldToNewer(h.key, self) {
		// A newer version of the key is in this worker: it goes first and
		// this one follows it, stale by then (no API call, and settled only
		// after the newer one's outcome).
		w.notYet(ctx, t, "queued behind its key")
		return h
	}
	w.settle(ctx, t, w.applier.applyEvent(bus.WithStream(ctx, t.stream), ev, t.d.Body(), t.d.Attempt()))
	return h
}

// debouncing reports whether wt's debounce window is still running. Only
// the live stream is debounced: resync sends each key once.
func (w *Worker) debouncing(wt waiter) bool {
	if wt.stream != bus.Live || len(w.cfg.Debounce) == 0 {
		return false
	}
	window := w.cfg.debounceFor(wt.ev.Entity)
	return window > 0 && w.cfg.Now().Before(wt.received().Add(window))
}

// notYet records that t's delivery was not applied now and waits, unsettled.
func (w *Worker) notYet(ctx context.Context, t task, why string) {
	if w.tracer != nil {
		traceWaiting(ctx, why)
	}
	if t.probe {
		// It has not gone to the API: another event may probe.
		w.breaker.Record(true, false, false)
	}
}

// parse reads t's event: parsed already for one that waited for its key,
// an error for one its producer marked rejected or that is no valid event.
func (w *Worker) parse(t task) (event.Event, error) {
	if t.held {
		return t.ev, nil
	}
	if reason := t.d.Headers()[bus.HeaderRejected]; reason != "" {
		// Its producer knew it is no valid event and said why.
		return event.Event{}, errors.New(reason)
	}
	return event.Parse(t.d.Body(), w.cfg.MaxEventBytes)
}

// settle carries out out on t's delivery and records it.
func (w *Worker) settle(ctx context.Context, t task, out Outcome) {
	stream, d, probe := t.stream, t.d, t.probe
	if w.tracer != nil {
		traceOutcome(ctx, out)
	}
	var err error
	switch out.Result {
	case ResultApplied, ResultDuplicate, ResultStale, ResultSuperseded, ResultRepaired:
		err = d.Ack(ctx)
	case ResultRetried, ResultLocked:
		if persistent(out.Result, d.Attempt()) {
			// Retries are quiet; one that keeps coming back is not.
			w.cfg.Logger.Warn("event keeps failing; retrying", "stream", string(stream), "key", out.Key.String(), "attempt", d.Attempt(), "result", string(out.Result), "reason", out.Reason, "retry_in", out.Delay)
		}
		err = d.Retry(ctx, out.Delay, out.Reason)
	case ResultParked:
		w.cfg.Logger.Warn("event parked", "stream", string(stream), "attempt", d.Attempt(), "reason", out.Reason)
		err = d.Park(ctx, out.Reason)
	default:
		err = d.Release(context.WithoutCancel(ctx))
	}
	if err != nil {
		// A Retry or Park whose publish failed leaves the delivery
		// unsettled, and RabbitMQ redelivers it only when its channel
		// closes, which a subscription waits on: hand it back now. Versions
		// absorb the repeat. Nothing is lost.
		if rerr := d.Release(context.WithoutCancel(ctx)); rerr != nil && !errors.Is(rerr, bus.ErrSettled) {
			err = errors.Join(err, rerr)
		}
		w.cfg.Logger.Warn("settling delivery failed; the broker will redeliver it", "stream", string(stream), "result", string(out.Result), "err", err)
	}
	if out.RetryAfter > 0 {
		// The API asked every caller to wait (sink.Classify decoded it).
		w.breaker.Hold(out.RetryAfter)
	}
	success := out.Result == ResultApplied || out.Result == ResultRepaired
	switch opened, closed := w.breaker.Record(probe, out.SinkFailure, success); {
	case opened:
		w.cfg.Logger.Warn("API failing: stopped pulling events; one probe event at a time until it answers",
			"failures", w.cfg.Breaker.Failures, "last_error", out.Reason)
	case closed:
		w.cfg.Logger.Info("API answered the probe; pulling events again")
	}
	w.metrics.events.WithLabelValues(string(stream), string(out.Result)).Inc()
	if t.held && (out.Result == ResultStale || out.Result == ResultSuperseded) {
		// It waited here behind a newer version of its key: a call saved.
		w.metrics.coalesced.WithLabelValues(string(stream)).Inc()
	}
	end := w.cfg.Now()
	w.metrics.duration.WithLabelValues(string(stream)).Observe(end.Sub(t.since).Seconds())
	if success && !out.OccurredAt.IsZero() {
		lag := max(0, end.Sub(out.OccurredAt).Seconds())
		w.lags.add(stream, end, lag) // before the metric, which tests wait for
		w.metrics.lag.WithLabelValues(string(stream)).Observe(lag)
	}
	w.done[stream].Add(1)
	w.resultsM.Lock()
	w.results[string(out.Result)]++
	w.resultsM.Unlock()
}

// persistent says whether a retry at this attempt is worth a warning: the
// 10th, then every 50th, so a stuck event shows without flooding the log.
// A locked key waits about a second per attempt, and the keys of a crashed
// worker stay locked for a lease TTL (60 s by default): those warn only
// every 100th attempt.
func persistent(r Result, attempt int) bool {
	if r == ResultLocked {
		return attempt%100 == 0
	}
	return attempt == 10 || attempt%50 == 0
}

func (w *Worker) isPaused(s bus.Stream) (bool, <-chan struct{}) {
	w.pausedM.Lock()
	defer w.pausedM.Unlock()
	ch, ok := w.pauseChanged[s]
	if !ok {
		ch = make(chan struct{})
		w.pauseChanged[s] = ch
	}
	return w.paused[s], ch
}

// pollControl reads every stream's pause flag once.
func (w *Worker) pollControl(ctx context.Context) error {
	next := map[bus.Stream]bool{}
	for _, s := range w.cfg.Streams {
		p, err := control.Paused(ctx, w.store, s)
		if err != nil {
			return err
		}
		next[s] = p != nil
	}
	w.pausedM.Lock()
	for s, v := range next {
		if w.paused[s] != v {
			w.paused[s] = v
			// Only this stream's pump wakes: pausing one stream must not
			// hand back the events the other holds (RabbitMQ counts each
			// hand-back towards its delivery limit).
			if ch, ok := w.pauseChanged[s]; ok {
				close(ch)
				delete(w.pauseChanged, s)
			}
		}
	}
	w.pausedM.Unlock()
	return nil
}

// controlLoop polls pause flags and publishes heartbeats until ctx ends.
func (w *Worker) controlLoop(ctx context.Context) {
	tick := time.NewTicker(w.cfg.ControlPoll)
	defer tick.Stop()
	lastBeat := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := w.pollControl(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("reading control flags failed; keeping the last known state", "err", err)
		}
		w.retryLongWaits(ctx)
		if time.Since(lastBeat) >= 2*time.Second {
			w.sampleRates()
			w.heartbeat(ctx, 10*time.Second)
			lastBeat = time.Now()
		}
	}
}

// retryLongWaits sends the events that waited a lease TTL for their key in
// memory (its holder is slow, or stuck on an unreachable store) to the
// broker's shortest retry tier, as if another process held the key: a
// delivery must not sit unacknowledged for ever (JetStream redelivers it
// after its ack wait anyway).
func (w *Worker) retryLongWaits(ctx context.Context) {
	for _, late := range w.keys.expired(w.cfg.Now().Add(-w.cfg.LeaseTTL)) {
		w.settle(ctx, task{stream: late.stream, d: late.d, since: late.since}, Outcome{
			Result: ResultLocked, Delay: jitter(w.cfg.LockedRetryDelay),
			Reason: "waited a lease TTL for another event of its key in this worker",
			Key:    store.Key{Entity: late.ev.Entity, Key: late.ev.Key},
		})
	}
}

// sampleRates computes per-stream throughput since the previous sample.
func (w *Worker) sampleRates() {
	now := w.cfg.Now()
	w.ratesM.Lock()
	defer w.ratesM.Unlock()
	if w.rates == nil {
		w.rates = map[bus.Stream]float64{}
		w.lastSample = map[bus.Stream]int64{}
	}
	elapsed := now.Sub(w.lastSampleAt).Seconds()
	for s, c := range w.done {
		n := c.Load()
		if !w.lastSampleAt.IsZero() && elapsed > 0 {
			w.rates[s] = float64(n-w.lastSample[s]) / elapsed
		}
		w.lastSample[s] = n
	}
	w.lastSampleAt = now
}

// Status returns this worker's heartbeat record.
func (w *Worker) Status() control.WorkerStatus {
	host, _ := os.Hostname()
	var startedAt time.Time
	if p := w.started.Load(); p != nil {
		startedAt = *p
	}
	s := control.WorkerStatus{
		ID: w.cfg.WorkerID, Host: host, PID: os.Getpid(),
		StartedAt: startedAt, SeenAt: w.cfg.Now().UTC(),
		Concurrency: w.cfg.Concurrency,
		InFlight:    map[bus.Stream]int64{},
		Consuming:   map[bus.Stream]bool{},
		PerStream:   map[bus.Stream]int64{},
		Results:     map[string]int64{},
		Breaker:     w.breaker.State(),
		Rates:       map[bus.Stream]float64{},
	}
	w.ratesM.Lock()
	for k, v := range w.rates {
		s.Rates[k] = v
	}
	w.ratesM.Unlock()
	for _, st := range w.cfg.Streams {
		s.InFlight[st] = w.inFlight[st].Load()
		s.Consuming[st] = w.consuming[st].Load()
		s.PerStream[st] = w.done[st].Load()
		if c := w.unacked[st].Load(); c != nil {
			if s.Unacked == nil {
				s.Unacked = map[bus.Stream]int64{}
			}
			s.Unacked[st] = int64((*c).Unacked())
		}
	}
	w.resultsM.Lock()
	for k, v := range w.results {
		s.Results[k] = v
	}
	w.resultsM.Unlock()
	s.Lag = w.lags.snapshot(w.cfg.Now())
	if w.cfg.Throttle != nil {
		s.Throttle = w.cfg.Throttle()
	}
	return s
}

// heartbeat writes the status; ttl 0 removes it (clean shutdown).
func (w *Worker) heartbeat(ctx context.Context, ttl time.Duration) {
	if ttl == 0 {
		if err := control.RemoveHeartbeat(ctx, w.store, w.cfg.WorkerID); err != nil {
			w.cfg.Logger.Debug("removing heartbeat", "err", err)
		}
		return
	}
	if err := control.Heartbeat(ctx, w.store, w.Status(), ttl); err != nil && ctx.Err() == nil {
		w.cfg.Logger.Warn("heartbeat failed", "err", err)
	}
}
