package eventsync

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/busmetrics"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/throttle"
)

// WorkerStatus is what a worker reports in its heartbeat: in-flight events
// per stream, results, rates, recent lag, the breaker's and the
// throttle's state.
type WorkerStatus = control.WorkerStatus

// WorkerOption customises one worker.
type WorkerOption func(*workerOptions)

type workerOptions struct {
	id string
}

// WithWorkerID names the worker in leases, heartbeats and logs. Default
// host-pid; give each worker of one process its own.
func WithWorkerID(id string) WorkerOption { return func(o *workerOptions) { o.id = id } }

// Worker applies events from the bus to the API: every version in order per
// entity, duplicates and stale events absorbed, creates never duplicated,
// failures retried without blocking the queue, and what cannot be applied
// parked with its reason. See docs/ARCHITECTURE.md.
type Worker struct {
	w *engine.Worker
}

// NewWorker builds a worker on the Client's bus, store and sink (opening
// them if needed), with Config.Worker's settings. A sink that has an
// Entities() []string method limits the entities the worker accepts (the
// HTTP sink's are its configured entities); events of others are parked.
func (c *Client) NewWorker(ctx context.Context, opts ...WorkerOption) (*Worker, error) {
	var o workerOptions
	for _, opt := range opts {
		opt(&o)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, err := c.busLocked(ctx)
	if err != nil {
		return nil, err
	}
	st, err := c.storeLocked(ctx)
	if err != nil {
		return nil, err
	}
	sk, err := c.sinkLocked(ctx)
	if err != nil {
		return nil, err
	}
	ecfg := c.cfg.Worker.engine()
	ecfg.WorkerID = o.id
	ecfg.Logger = c.log
	ecfg.TracerProvider = c.opts.tracer
	if o.id != "" {
		ecfg.Logger = c.log.With("worker", o.id)
	}
	switch s := c.opts.sink.(type) {
	case nil:
		ecfg.Entities = c.cfg.Sink.Entities()
	case interface{ Entities() []string }:
		ecfg.Entities = s.Entities()
	}
	if ts, ok := sk.(*throttle.Sink); ok {
		ecfg.Throttle = func() *control.ThrottleStatus { return throttleStatus(ts.Stats(), time.Now()) }
	}
	w, err := engine.NewWorker(b, st, sk, ecfg, c.engineMetrics())
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	c.queueMetricsLocked(b, st)
	return &Worker{w: w}, nil
}

// throttleStatus is the throttle's state as a heartbeat reports it: calls
// in flight by the stream of their priority, the hold only while active.
func throttleStatus(st throttle.Stats, now time.Time) *control.ThrottleStatus {
	ts := &control.ThrottleStatus{Rate: st.Rate, Limit: st.Limit, Outage: st.Outage, InFlight: map[bus.Stream]int64{
		bus.Live: int64(st.InFlight[throttle.Live]), bus.Resync: int64(st.InFlight[throttle.Resync]),
	}}
	if st.HeldUntil.After(now) {
		until := st.HeldUntil.UTC()
		ts.HeldUntil = &until
	}
	return ts
}

// queueMetricsLocked registers the bus's queue metrics once per Client:
// workers and relays see the bus anyway, so either exports the queues'
// depths (a relay keeps them while the workers are scaled to zero). ctl,
// when given, adds the workers' count of unacknowledged deliveries where
// the broker has none. Callers hold c.mu.
func (c *Client) queueMetricsLocked(b bus.Bus, ctl store.Control) {
	if c.opts.registerer == nil {
		return
	}
	if c.queueMx == nil {
		c.queueMx = busmetrics.New(b, busmetrics.Options{Logger: c.log})
		c.opts.registerer.MustRegister(c.queueMx)
	}
	if ctl != nil {
		c.queueMx.UseControl(ctl)
	}
}

// Run consumes until ctx ends, then stops pulling, lets in-flight events
// finish within Config.Worker.ShutdownGrace and releases the rest. It
// returns nil after a clean stop.
func (w *Worker) Run(ctx context.Context) error { return w.w.Run(ctx) }

// Status reports the worker's current state, as its heartbeat does.
func (w *Worker) Status() WorkerStatus { return w.w.Status() }
