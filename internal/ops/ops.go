// Package ops is what an operator can do to a running deployment, written
// once for every front end: `eventsync ctl` on a terminal, and the web
// console and its HTTP control API (internal/console). It reads and writes
// through the deployment's bus and the state store's control space only:
// pause flags and worker heartbeats (internal/control), the bus's queue
// statistics and parked queue, the resync checkpoints and the last verify
// reports.
//
// An edited parked event is checked with event.Parse, the worker's own
// validator, before anything is published: a body the worker would park
// again is refused with the validator's message.
package ops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/store"
)

// Ops operates one deployment. Bus is needed for queue statistics and
// the parked queue, Control for pause flags, heartbeats and resync runs;
// an operation whose part is nil returns ErrNotConnected.
type Ops struct {
	Bus     bus.Bus
	Control store.Control
	// MaxEventBytes is the worker's limit on an event's size, which an
	// edited body must respect (0: event.Parse's default).
	MaxEventBytes int
	// Entities, when not empty, are the entity types the worker's sink
	// configures; an edited event of another entity is refused, since the
	// worker would park it again.
	Entities []string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// ErrNotConnected is returned by an operation whose bus or store was not
// given to Ops.
var ErrNotConnected = errors.New("ops: not connected to what this operation needs")

// InvalidEventError is an edited body refused before anything was
// published; Err is the validator's error (matches event.ErrInvalid).
type InvalidEventError struct {
	Err error
}

func (e *InvalidEventError) Error() string { return e.Err.Error() }
func (e *InvalidEventError) Unwrap() error { return e.Err }

func (o *Ops) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Ops) needBus() error {
	if o.Bus == nil {
		return fmt.Errorf("%w: no bus", ErrNotConnected)
	}
	return nil
}

func (o *Ops) needControl() error {
	if o.Control == nil {
		return fmt.Errorf("%w: no state store", ErrNotConnected)
	}
	return nil
}

// StreamStatus is one stream as the broker and the workers see it.
type StreamStatus struct {
	Stream      bus.Stream `json:"stream"`
	Paused      bool       `json:"paused"`
	PausedBy    string     `json:"paused_by,omitempty"`
	PauseReason string     `json:"pause_reason,omitempty"`
	PausedSince *time.Time `json:"paused_since,omitempty"`
	Ready       int64      `json:"ready"`
	Delayed     int64      `json:"delayed"`
	// Unacked counts deliveries handed to consumers and not settled yet,
	// prefetched ones included: the broker's count where it tells
	// (NATS), else the sum the workers' heartbeats report (RabbitMQ), 0
	// without consumers. -1 when none of these tells.
	Unacked int64 `json:"unacked"`
	// Parked counts the parked queue, which the streams share (-1 unknown).
	Parked    int64 `json:"parked"`
	Consumers int   `json:"consumers"`
	// InFlight is what the workers' heartbeats report in flight.
	InFlight int64 `json:"in_flight"`
	// Rate is the sum of the workers' settled deliveries per second.
	Rate float64 `json:"rate_per_s"`
	// APIInFlight counts the stream's API calls holding a throttle slot,
	// summed over worker processes (workers of one process share one).
	APIInFlight int64 `json:"api_in_flight"`
	// Lag is the end-to-end lag of recently applied events: p50 and p99
	// are the highest any worker reports, an upper bound of the quantiles
	// over all of them; Events sums what they are computed from. nil when
	// no worker applied an event with occurred_at in the last minute.
	Lag *control.Lag `json:"lag,omitempty"`
}

// APIStatus is the third-party API as the workers' throttles and
// breakers see it.
type APIStatus struct {
	// Breaker is the worst of the workers' breakers: closed, half-open or
	// open ("" without workers).
	Breaker string `json:"breaker"`
	// Throttled is set when some worker's sink is throttled; the fields
	// below are its state.
	Throttled bool `json:"throttled"`
	// Rate is the highest call rate a worker allows, calls/s (processes
	// share it through the store; 0 while none is known).
	Rate float64 `json:"rate_per_s"`
	// Limit sums the processes' concurrency limits; InFlight their API
	// calls in flight.
	Limit    int   `json:"limit"`
	InFlight int64 `json:"in_flight"`
	// HeldUntil is the latest active hold's end; Outage is set while a
	// worker judges the API down.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	Outage    bool       `json:"outage,omitempty"`
}

// ClusterStatus is the whole deployment: streams, the API, then live
// workers.
type ClusterStatus struct {
	Streams []StreamStatus         `json:"streams"`
	API     APIStatus              `json:"api"`
	Workers []control.WorkerStatus `json:"workers"`
}

// Status reads every stream's pause flag and queue statistics and the
// workers' heartbeats.
func (o *Ops) Status(ctx context.Context) (ClusterStatus, error) {
	if err := errors.Join(o.needBus(), o.needControl()); err != nil {
		return ClusterStatus{}, err
	}
	workers, err := control.Workers(ctx, o.Control)
	if err != nil {
		return ClusterStatus{}, err
	}
	out := ClusterStatus{Workers: workers, API: apiOf(workers)}
	for _, s := range bus.Streams {
		ss, err := o.stream(ctx, s, workers)
		if err != nil {
			return out, err
		}
		out.Streams = append(out.Streams, ss)
	}
	return out, nil
}

func (o *Ops) stream(ctx context.Context, s bus.Stream, workers []control.WorkerStatus) (StreamStatus, error) {
	ss := StreamStatus{Stream: s}
	p, err := control.Paused(ctx, o.Control, s)
	if err != nil {
		return ss, err
	}
	if p != nil {
		ss.Paused, ss.PausedBy, ss.PauseReason = true, p.By, p.Reason
		if !p.Since.IsZero() {
			since := p.Since
			ss.PausedSince = &since
		}
	}
	stats, err := o.Bus.Stats(ctx, s)
	if err != nil {
		return ss, fmt.Errorf("queue stats of %s: %w", s, err)
	}
	control.FillUnacked(&stats, workers)
	ss.Ready, ss.Delayed, ss.Consumers = stats.Ready, stats.Delayed, stats.Consumers
	ss.Unacked, ss.Parked = stats.Unacked, stats.Parked
	fold(&ss, workers)
	return ss, nil
}

// fold adds what the workers' heartbeats say of ss's stream.
func fold(ss *StreamStatus, workers []control.WorkerStatus) {
	s := ss.Stream
	for _, w := range workers {
		ss.InFlight += w.InFlight[s]
		ss.Rate += w.Rates[s]
		if l, ok := w.Lag[s]; ok {
			if ss.Lag == nil {
				ss.Lag = &control.Lag{}
			}
			ss.Lag.P50, ss.Lag.P99 = max(ss.Lag.P50, l.P50), max(ss.Lag.P99, l.P99)
			ss.Lag.Events += l.Events
		}
	}
	for _, t := range throttles(workers) {
		ss.APIInFlight += t.InFlight[s]
	}
}

// throttles returns one throttle status per worker process: the workers
// of one process share its throttle, so each reports the same calls.
func throttles(workers []control.WorkerStatus) []*control.ThrottleStatus {
	seen := map[string]bool{}
	var out []*control.ThrottleStatus
	for _, w := range workers {
		proc := fmt.Sprintf("%s/%d", w.Host, w.PID)
		if w.Throttle == nil || seen[proc] {
			continue
		}
		seen[proc] = true
		out = append(out, w.Throttle)
	}
	return out
}

// breakerRank orders breaker states from best to worst.
var breakerRank = map[string]int{"closed": 1, "half-open": 2, "open": 3}

// apiOf sums up the API's state from the workers' heartbeats.
func apiOf(workers []control.WorkerStatus) APIStatus {
	var a APIStatus
	for _, w := range workers {
		if breakerRank[w.Breaker] > breakerRank[a.Breaker] || a.Breaker == "" {
			a.Breaker = w.Breaker
		}
	}
	for _, t := range throttles(workers) {
		a.Throttled = true
		a.Rate = max(a.Rate, t.Rate)
		a.Limit += t.Limit
		for _, n := range t.InFlight {
			a.InFlight += n
		}
		if t.HeldUntil != nil && (a.HeldUntil == nil || t.HeldUntil.After(*a.HeldUntil)) {
			until := *t.HeldUntil
			a.HeldUntil = &until
		}
		a.Outage = a.Outage || t.Outage
	}
	return a
}

// Workers lists the live workers' heartbeats, sorted by id.
func (o *Ops) Workers(ctx context.Context) ([]control.WorkerStatus, error) {
	if err := o.needControl(); err != nil {
		return nil, err
	}
	return control.Workers(ctx, o.Control)
}

// SetPaused pauses or resumes stream for every worker. It returns whether
// the stream was paused before.
func (o *Ops) SetPaused(ctx context.Context, stream bus.Stream, paused bool, by, reason string) (was bool, err error) {
	if err := o.needControl(); err != nil {
		return false, err
	}
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return false, err
	}
	p, err := control.Paused(ctx, o.Control, stream)
	if err != nil {
		return false, err
	}
	return p != nil, control.SetPaused(ctx, o.Control, stream, paused, by, reason)
}

// ListParked returns the parked messages matching f, oldest first.
func (o *Ops) ListParked(ctx context.Context, f bus.ParkedFilter) ([]bus.ParkedMessage, error) {
	if err := o.needBus(); err != nil {
		return nil, err
	}
	msgs, err := o.Bus.ListParked(ctx, f)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].ParkedAt.Before(msgs[j].ParkedAt) })
	return msgs, nil
}

// ShowParked returns the parked message id, or an error matching
// bus.ErrNotParked.
func (o *Ops) ShowParked(ctx context.Context, id string) (bus.ParkedMessage, error) {
	if id == "" {
		return bus.ParkedMessage{}, fmt.Errorf("no message id given: %w", bus.ErrNotParked)
	}
	msgs, err := o.ListParked(ctx, bus.ParkedFilter{IDs: []string{id}})
	if err != nil {
		return bus.ParkedMessage{}, err
	}
	if len(msgs) == 0 {
		return bus.ParkedMessage{}, fmt.Errorf("parked message %s: %w", id, bus.ErrNotParked)
	}
	return msgs[0], nil
}

// ReplayParked sends the matching messages back to their original stream
// and returns how many.
func (o *Ops) ReplayParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	if err := o.needBus(); err != nil {
		return 0, err
	}
	return o.Bus.ReplayParked(ctx, f)
}

// PurgeParked deletes the matching messages for good and returns how many.
func (o *Ops) PurgeParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	if err := o.needBus(); err != nil {
		return 0, err
	}
	return o.Bus.PurgeParked(ctx, f)
}

// CheckEvent validates an edited body as the worker would: event.Parse
// with the worker's size limit, and the entity among the configured ones.
// The error is an *InvalidEventError.
func (o *Ops) CheckEvent(body []byte) (event.Event, error) {
	ev, err := event.Parse(body, o.MaxEventBytes)
	if err != nil {
		return ev, &InvalidEventError{Err: err}
	}
	if len(o.Entities) > 0 && !slices.Contains(o.Entities, ev.Entity) {
		return ev, &InvalidEventError{Err: &event.ValidationError{Field: "entity",
			Problem: fmt.Sprintf("%q is not configured in the sink (configured: %s); the worker would park it again", ev.Entity, strings.Join(o.Entities, ", "))}}
	}
	return ev, nil
}

// EditAndReplay replays the parked message id with body in place of its
// own, after checking body with CheckEvent: an invalid body is refused
// (*InvalidEventError) and nothing is published. A message that is no
// longer parked (another operator replayed or purged it) is an error
// matching bus.ErrNotParked, and nothing is published either.
func (o *Ops) EditAndReplay(ctx context.Context, id string, body []byte) (event.Event, error) {
	if err := o.needBus(); err != nil {
		return event.Event{}, err
	}
	ev, err := o.CheckEvent(body)
	if err != nil {
		return ev, err
	}
	return ev, o.Bus.ReplayParkedAs(ctx, id, body)
}

// VerifyReports returns the last report `eventsync verify` recorded for
// each entity, sorted by entity.
func (o *Ops) VerifyReports(ctx context.Context) ([]verify.LastReport, error) {
	if err := o.needControl(); err != nil {
		return nil, err
	}
	return verify.LastReports(ctx, o.Control)
}

// ResyncRun is a resync run's checkpoint with what follows from it.
type ResyncRun struct {
	resync.Checkpoint
	// Percent of Total published and confirmed (0 while Total is 0).
	Percent float64 `json:"percent"`
	// Rate is rows per second over the run's lifetime so far.
	Rate float64 `json:"rate_per_s"`
	// ETASeconds estimates the time left at Rate; -1 when unknown or done.
	ETASeconds float64 `json:"eta_s"`
	// State is "done" (every row published and confirmed; workers may still
	// be applying them), "running" (checkpointed within the last minute) or
	// "stalled" (not checkpointed for a minute: interrupted; rerunning the
	// same command continues it).
	State string `json:"state"`
}

// stalledAfter is how long a run may go without a checkpoint before it
// reads as stalled; a page is checkpointed every few seconds at most.
const stalledAfter = time.Minute

// ResyncRuns lists every recorded resync run, the most recently updated
// first.
func (o *Ops) ResyncRuns(ctx context.Context) ([]ResyncRun, error) {
	if err := o.needControl(); err != nil {
		return nil, err
	}
	cps, err := resync.ListCheckpoints(ctx, o.Control)
	if err != nil {
		return nil, err
	}
	now := o.now()
	out := make([]ResyncRun, 0, len(cps))
	for _, cp := range cps {
		out = append(out, runOf(cp, now))
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Updated.Equal(out[j].Updated) {
			return out[i].Updated.After(out[j].Updated)
		}
		return out[i].RunID < out[j].RunID
	})
	return out, nil
}

func runOf(cp resync.Checkpoint, now time.Time) ResyncRun {
	r := ResyncRun{Checkpoint: cp, ETASeconds: -1}
	if cp.Total > 0 {
		r.Percent = min(100, 100*float64(cp.Rows)/float64(cp.Total))
	}
	end := cp.Updated
	if cp.Finished != nil {
		end = *cp.Finished
	}
	if d := end.Sub(cp.Started).Seconds(); d > 0 {
		r.Rate = float64(cp.Rows) / d
	}
	switch {
	case cp.Done:
		r.State = "done"
	case now.Sub(cp.Updated) > stalledAfter:
		r.State = "stalled"
	default:
		r.State = "running"
	}
	if !cp.Done && r.Rate > 0 && cp.Total >= cp.Rows {
		r.ETASeconds = float64(cp.Total-cp.Rows) / r.Rate
	}
	return r
}
