package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/sink"
)

// batcher is a sink.Sink between the Applier and a sink.BatchSink: the
// creates, updates and deletes of concurrently leased keys are grouped by
// (stream, entity, op) into the sink's batch calls, and each caller gets
// its own item's result, so the apply algorithm (one lease, one intent,
// one commit per key) does not change. Live and resync never share a call:
// the throttle serves live calls first.
//
// A group is sent when it holds MaxBatch items or when linger has passed
// since its first item. It has no goroutine: the caller that opened a
// group leads it (waits, sends, hands the results out); a leader whose
// context ends before sending leaves, and the oldest remaining caller
// leads instead. Lookups, and ops the sink cannot batch (MaxBatch ≤ 1),
// go straight to the sink.
type batcher struct {
	sink.BatchSink
	linger time.Duration
	// afterFunc runs f after d unless stopped; time.AfterFunc but for
	// tests.
	afterFunc func(d time.Duration, f func()) (stop func() bool)
	calls     *prometheus.CounterVec
	sizes     *prometheus.HistogramVec

	mu   sync.Mutex
	open map[groupKey]*group // groups new items may join
}

// batched puts a batcher in front of sk when it has bulk endpoints; other
// sinks are returned as they are. With tracing on, every batch call gets a
// span (the single calls are traced above the batcher, see traced).
func batched(sk sink.Sink, cfg Config, m *Metrics) sink.Sink {
	bs, ok := sk.(sink.BatchSink)
	if !ok {
		return sk
	}
	if tr := cfg.tracer(); tr != nil {
		bs = tracedBatchSink{bs, tr}
	}
	return newBatcher(bs, cfg.BatchLinger, m)
}

func newBatcher(bs sink.BatchSink, linger time.Duration, m *Metrics) *batcher {
	return &batcher{
		BatchSink: bs,
		linger:    linger,
		afterFunc: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		calls:     m.batchCalls,
		sizes:     m.batchSize,
		open:      map[groupKey]*group{},
	}
}

// groupKey says which writes may share a call.
type groupKey struct {
	stream bus.Stream
	entity string
	op     sink.Op
}

// group is the writes of one batch call being gathered. Its fields are
// guarded by the batcher's mu.
type group struct {
	key    groupKey
	max    int
	items  []*pending
	leader *pending
	// ready is closed when the group is closed to new items (full, or its
	// linger passed): its leader sends it then.
	ready      chan struct{}
	closed     bool
	sent       bool
	stopLinger func() bool
}

// pending is one caller's write waiting in a group.
type pending struct {
	item sink.BatchItem
	ctx  context.Context
	// lead is closed when the caller becomes its group's leader (the one
	// before it left); nil for the caller that opened the group.
	lead chan struct{}
	// done is closed when res and err are set (the call answered).
	done chan struct{}
	res  sink.BatchResult
	err  error
}

// Create implements sink.Sink.
func (b *batcher) Create(ctx context.Context, r sink.Record) (string, error) {
	if b.MaxBatch(r.Entity, sink.OpCreate) <= 1 {
		return b.BatchSink.Create(ctx, r)
	}
	res, err := b.write(ctx, sink.OpCreate, r.Entity, sink.BatchItem{Record: r})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		return "", err
	}
	return res.RemoteID, nil
}

// Update implements sink.Sink.
func (b *batcher) Update(ctx context.Context, remoteID string, r sink.Record) error {
	if b.MaxBatch(r.Entity, sink.OpUpdate) <= 1 {
		return b.BatchSink.Update(ctx, remoteID, r)
	}
	res, err := b.write(ctx, sink.OpUpdate, r.Entity, sink.BatchItem{RemoteID: remoteID, Record: r})
	if err == nil {
		err = res.Err
	}
	return err
}

// Delete implements sink.Sink. The item carries no key: the single call
// does not know it either.
func (b *batcher) Delete(ctx context.Context, entity, remoteID string) error {
	if b.MaxBatch(entity, sink.OpDelete) <= 1 {
		return b.BatchSink.Delete(ctx, entity, remoteID)
	}
	res, err := b.write(ctx, sink.OpDelete, entity, sink.BatchItem{RemoteID: remoteID, Record: sink.Record{Entity: entity}})
	if err == nil {
		err = res.Err
	}
	return err
}

// write adds item to the open group of its kind (opening one, and leading
// it, when there is none) and waits for its result or the end of ctx.
func (b *batcher) write(ctx context.Context, op sink.Op, entity string, item sink.BatchItem) (sink.BatchResult, error) {
	stream, _ := bus.StreamFrom(ctx)
	k := groupKey{stream: stream, entity: entity, op: op}
	p := &pending{item: item, ctx: ctx, done: make(chan struct{})}
	b.mu.Lock()
	g := b.open[k]
	if g == nil {
		g = &group{key: k, max: b.MaxBatch(entity, op), leader: p, ready: make(chan struct{})}
		b.open[k] = g
		g.stopLinger = b.afterFunc(b.linger, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.close(g)
		})
	} else {
		p.lead = make(chan struct{})
	}
	g.items = append(g.items, p)
	if len(g.items) >= g.max {
		b.close(g)
	}
	b.mu.Unlock()
	return b.await(g, p)
}

// close takes g out of the open groups, so no item joins it any more, and
// wakes its leader to send it. b.mu is held.
func (b *batcher) close(g *group) {
	if g.closed {
		return
	}
	g.closed = true
	if b.open[g.key] == g {
		delete(b.open, g.key)
	}
	close(g.ready)
}

// await waits as p's group's leader (for the group to close, then sends
// it) or as a follower (for the result, or to lead when the leader left).
func (b *batcher) await(g *group, p *pending) (sink.BatchResult, error) {
	for {
		b.mu.Lock()
		leads := g.leader == p
		b.mu.Unlock()
		if leads {
			select {
			case <-g.ready:
				b.send(g)
				if err := p.ctx.Err(); err != nil && (p.err != nil || p.res.Err != nil) {
					// It stopped waiting while its call was in flight, the
					// call likely cancelled with it: as a follower would.
					return sink.BatchResult{}, inFlight(g, err)
				}
				return p.res, p.err
			case <-p.ctx.Done():
				b.leave(g, p) // only a leader sends: g is not sent yet
				return sink.BatchResult{}, fmt.Errorf("sink %s %s: batched write abandoned before it was sent: %w", g.key.op, g.key.entity, p.ctx.Err())
			}
		}
		select {
		case <-p.done:
			return p.res, p.err
		case <-p.lead:
		case <-p.ctx.Done():
			if b.leave(g, p) {
				return sink.BatchResult{}, fmt.Errorf("sink %s %s: batched write abandoned before it was sent: %w", g.key.op, g.key.entity, p.ctx.Err())
			}
			return sink.BatchResult{}, inFlight(g, p.ctx.Err())
		}
	}
}

// inFlight is the error of a caller that stopped waiting for its group's
// call in flight: its write is in doubt, as a cancelled single call's (the
// intent Acquire recorded covers it).
func inFlight(g *group, err error) error {
	return fmt.Errorf("sink %s %s: stopped waiting for a batch call in flight: %w", g.key.op, g.key.entity, err)
}

// leave takes p out of g unless g was sent (false then), passing the lead
// to the oldest remaining caller when p led it.
func (b *batcher) leave(g *group, p *pending) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if g.sent {
		return false
	}
	g.items = slices.DeleteFunc(g.items, func(q *pending) bool { return q == p })
	if len(g.items) == 0 {
		g.stopLinger()
		b.close(g)
		return true
	}
	if g.leader == p {
		g.leader = g.items[0]
		close(g.leader.lead)
	}
	return true
}

// errBatchAbandoned ends a batch call every caller of which stopped
// waiting (a shutdown past its grace, or lost leases).
var errBatchAbandoned = errors.New("engine: every write of the batch call was abandoned")

// send makes g's batch call and hands each item its result; a failure of
// the whole call is every item's.
func (b *batcher) send(g *group) {
	b.mu.Lock()
	g.sent = true
	g.stopLinger()
	b.close(g)
	items := g.items
	leader := g.leader
	b.mu.Unlock()

	batch := make([]sink.BatchItem, len(items))
	for i, p := range items {
		batch[i] = p.item
	}
	// One item's end (its lease lost, say) must not cancel the others'
	// writes: the call ends only when every caller stopped waiting. Each
	// caller's context ends with the worker's handlers at the latest, so
	// a shutdown past its grace cancels it; the sink's timeouts bound it
	// otherwise.
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(leader.ctx))
	var waiting atomic.Int64
	waiting.Store(int64(len(items)))
	stops := make([]func() bool, len(items))
	for i, p := range items {
		stops[i] = context.AfterFunc(p.ctx, func() {
			if waiting.Add(-1) == 0 {
				cancel(errBatchAbandoned)
			}
		})
	}
	results, err := b.WriteBatch(ctx, g.key.entity, g.key.op, batch)
	for _, stop := range stops {
		stop()
	}
	if err == nil && len(results) != len(items) {
		// An answer that cannot be matched to the items: every write is
		// in doubt.
		err = fmt.Errorf("sink batch %s %s: %d results for %d items", g.key.op, g.key.entity, len(results), len(items))
	}
	b.calls.WithLabelValues(string(g.key.op), string(sink.Classify(ctx, err).Class)).Inc()
	b.sizes.WithLabelValues(string(g.key.op)).Observe(float64(len(items)))
	cancel(nil)
	for i, p := range items {
		switch {
		case err == nil:
			p.res = results[i]
		case i == 0:
			p.err = err
		default:
			// One failed call is one signal of the API's health, however
			// many writes it carried.
			p.err = &sharedCallError{err: err}
		}
		close(p.done)
	}
}

// sharedCallError is the failure of a whole batch call as every item but
// the first sees it: the same error (errors.Is and errors.As see through
// it), but not counted again against the API's health (the breaker), so a
// failed call of a hundred writes is one failure, as a single call's is.
type sharedCallError struct{ err error }

func (e *sharedCallError) Error() string { return e.err.Error() }
func (e *sharedCallError) Unwrap() error { return e.err }

// sharedCall reports whether err is a batch call's failure already counted
// for another of its items.
func sharedCall(err error) bool {
	var shared *sharedCallError
	return errors.As(err, &shared)
}
