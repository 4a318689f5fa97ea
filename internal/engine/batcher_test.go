package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/tracing/tracingtest"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store/memory"
)

// batchDouble is a sink.BatchSink test double: it records every call and
// answers each item ok (creates with "r-<key>") unless answer says
// otherwise; with gate set, a batch call waits for it (or its context).
type batchDouble struct {
	max    func(entity string, op sink.Op) int
	answer func(items []sink.BatchItem) ([]sink.BatchResult, error)
	gate   chan struct{}

	mu      sync.Mutex
	calls   []batchCall
	singles []string
	sent    chan batchCall // each call as it starts, when set
}

type batchCall struct {
	stream bus.Stream
	entity string
	op     sink.Op
	keys   []string // the items' keys, remote ids for deletes
	ctx    context.Context
}

func (d *batchDouble) single(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.singles = append(d.singles, what)
}

func (d *batchDouble) Create(_ context.Context, r sink.Record) (string, error) {
	d.single("create " + r.Key)
	return "r-" + r.Key, nil
}

func (d *batchDouble) Update(_ context.Context, id string, r sink.Record) error {
	d.single("update " + r.Key)
	return nil
}

func (d *batchDouble) Delete(_ context.Context, entity, id string) error {
	d.single("delete " + id)
	return nil
}

func (d *batchDouble) Lookup(_ context.Context, entity, key string) ([]string, error) {
	d.single("lookup " + key)
	return nil, nil
}

func (d *batchDouble) MaxBatch(entity string, op sink.Op) int {
	if d.max == nil {
		return 100
	}
	return d.max(entity, op)
}

func (d *batchDouble) WriteBatch(ctx context.Context, entity string, op sink.Op, items []sink.BatchItem) ([]sink.BatchResult, error) {
	stream, _ := bus.StreamFrom(ctx)
	c := batchCall{stream: stream, entity: entity, op: op, ctx: ctx}
	for _, it := range items {
		if op == sink.OpDelete {
			c.keys = append(c.keys, it.RemoteID)
		} else {
			c.keys = append(c.keys, it.Record.Key)
		}
	}
	d.mu.Lock()
	d.calls = append(d.calls, c)
	d.mu.Unlock()
	if d.sent != nil {
		d.sent <- c
	}
	if d.gate != nil {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return nil, fmt.Errorf("batch %s: %w", op, ctx.Err()) // as net/http does
		}
	}
	if d.answer != nil {
		return d.answer(items)
	}
	out := make([]sink.BatchResult, len(items))
	for i, it := range items {
		if op == sink.OpCreate {
			out[i].RemoteID = "r-" + it.Record.Key
		}
	}
	return out, nil
}

func (d *batchDouble) callsMade() []batchCall {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// manualLinger stands in for time.AfterFunc: lingers pass when the test
// says.
type manualLinger struct {
	mu  sync.Mutex
	fns []*func()
}

func (m *manualLinger) afterFunc(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &f
	m.fns = append(m.fns, p)
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		n := len(m.fns)
		m.fns = slices.DeleteFunc(m.fns, func(q *func()) bool { return q == p })
		return len(m.fns) < n
	}
}

// pass lets every linger set so far pass.
func (m *manualLinger) pass() {
	m.mu.Lock()
	fns := m.fns
	m.fns = nil
	m.mu.Unlock()
	for _, f := range fns {
		(*f)()
	}
}

func metricOf(t *testing.T, m prometheus.Metric) *dto.Metric {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	return &out
}

func newTestBatcher(d *batchDouble) (*batcher, *manualLinger, *Metrics) {
	m := NewMetrics(nil)
	b := newBatcher(d, time.Hour, m)
	ml := &manualLinger{}
	b.afterFunc = ml.afterFunc
	return b, ml, m
}

// queued is how many writes wait in b's open groups.
func (b *batcher) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, g := range b.open {
		n += len(g.items)
	}
	return n
}

func waitQueued(t *testing.T, b *batcher, n int) {
	t.Helper()
	waitUntil(t, 5*time.Second, fmt.Sprintf("%d writes queued", n), func() bool { return b.queued() == n })
}

// answer is one caller's result.
type answer struct {
	key string
	id  string
	err error
}

// writes runs fn for each key in a goroutine of its own; the answers come
// on the returned channel.
func writes(keys []string, fn func(key string) (string, error)) <-chan answer {
	out := make(chan answer, len(keys))
	for _, k := range keys {
		go func() {
			id, err := fn(k)
			out <- answer{k, id, err}
		}()
	}
	return out
}

func collectAnswers(t *testing.T, ch <-chan answer, n int) map[string]answer {
	t.Helper()
	got := map[string]answer{}
	for range n {
		select {
		case a := <-ch:
			got[a.key] = a
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d writes answered", len(got), n)
		}
	}
	return got
}

func keysOf(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func rec(entity, key string) sink.Record {
	return sink.Record{Entity: entity, Key: key, Version: 1}
}

func TestBatcherGroupsByStreamEntityAndOp(t *testing.T) {
	d := &batchDouble{}
	b, linger, m := newTestBatcher(d)
	live := bus.WithStream(context.Background(), bus.Live)
	resync := bus.WithStream(context.Background(), bus.Resync)
	create := func(ctx context.Context, entity string) func(string) (string, error) {
		return func(k string) (string, error) { return b.Create(ctx, rec(entity, k)) }
	}
	update := func(k string) (string, error) { return "", b.Update(live, "r-"+k, rec("listing", k)) }
	del := func(k string) (string, error) { return "", b.Delete(live, "listing", "r-"+k) }
	answers := []<-chan answer{
		writes(keysOf("live", 3), create(live, "listing")),
		writes(keysOf("resync", 2), create(resync, "listing")),
		writes(keysOf("host", 2), create(live, "host")),
		writes(keysOf("upd", 2), update),
		writes(keysOf("del", 2), del),
	}
	waitQueued(t, b, 11)
	if n := len(d.callsMade()); n != 0 {
		t.Fatalf("%d calls before the linger passed or a group filled", n)
	}
	linger.pass()
	for i, n := range []int{3, 2, 2, 2, 2} {
		for k, a := range collectAnswers(t, answers[i], n) {
			if a.err != nil {
				t.Errorf("%s: %v", k, a.err)
			}
			if i < 3 && a.id != "r-"+k {
				t.Errorf("%s: remote id %q, want r-%s (its own item's)", k, a.id, k)
			}
		}
	}
	var got []string
	for _, c := range d.callsMade() {
		sort.Strings(c.keys)
		got = append(got, fmt.Sprintf("%s %s %s %v", c.stream, c.entity, c.op, c.keys))
	}
	sort.Strings(got)
	want := []string{
		"live host create [host0 host1]",
		"live listing create [live0 live1 live2]",
		"live listing delete [r-del0 r-del1]",
		"live listing update [upd0 upd1]",
		"resync listing create [resync0 resync1]",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("calls:\n%s\nwant:\n%s", got, want)
	}
	if len(d.singles) != 0 {
		t.Errorf("single calls %v, want none", d.singles)
	}
	if n := metricOf(t, m.batchCalls.WithLabelValues("create", "ok")).GetCounter().GetValue(); n != 3 {
		t.Errorf("batch calls (create, ok) = %v, want 3", n)
	}
	h := metricOf(t, m.batchSize.WithLabelValues("create").(prometheus.Metric)).GetHistogram()
	if h.GetSampleCount() != 3 || h.GetSampleSum() != 7 {
		t.Errorf("create batch sizes: %d calls of %v items, want 3 of 7", h.GetSampleCount(), h.GetSampleSum())
	}
}

func TestBatcherSendsAFullGroupAtOnce(t *testing.T) {
	d := &batchDouble{max: func(string, sink.Op) int { return 3 }}
	b, linger, _ := newTestBatcher(d)
	ctx := bus.WithStream(context.Background(), bus.Live)
	ch := writes(keysOf("k", 7), func(k string) (string, error) { return b.Create(ctx, rec("listing", k)) })
	// Two full groups go without waiting for the linger; the seventh
	// write waits for it.
	collectAnswers(t, ch, 6)
	waitQueued(t, b, 1)
	linger.pass()
	collectAnswers(t, ch, 1)
	var sizes []int
	for _, c := range d.callsMade() {
		sizes = append(sizes, len(c.keys))
	}
	if !slices.Equal(sizes, []int{3, 3, 1}) {
		t.Fatalf("batch sizes %v, want [3 3 1]", sizes)
	}
}

// With the real timer, a write nobody joins goes out after the linger.
func TestBatcherSendsAfterTheLinger(t *testing.T) {
	d := &batchDouble{}
	b := newBatcher(d, 10*time.Millisecond, NewMetrics(nil))
	id, err := b.Create(context.Background(), rec("listing", "alone"))
	if err != nil || id != "r-alone" {
		t.Fatalf("Create = %q, %v", id, err)
	}
	if calls := d.callsMade(); len(calls) != 1 || len(calls[0].keys) != 1 {
		t.Fatalf("calls %+v, want one batch of one", calls)
	}
}

func TestBatcherSingleCallsGoStraightToTheSink(t *testing.T) {
	d := &batchDouble{max: func(entity string, op sink.Op) int {
		if op == sink.OpDelete {
			return 1
		}
		return 0
	}}
	b, _, _ := newTestBatcher(d)
	ctx := context.Background()
	if _, err := b.Create(ctx, rec("listing", "a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, "r-b", rec("listing", "b")); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "listing", "r-c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lookup(ctx, "listing", "d"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"create a", "update b", "delete r-c", "lookup d"}; !slices.Equal(d.singles, want) {
		t.Fatalf("single calls %v, want %v", d.singles, want)
	}
	if n := len(d.callsMade()); n != 0 {
		t.Fatalf("%d batch calls, want none", n)
	}
}

// The caller that opened a group leads it; when its context ends before
// the group is sent, the next caller leads and the others' writes go.
func TestBatcherLeaderCancelledBeforeSending(t *testing.T) {
	d := &batchDouble{}
	b, linger, _ := newTestBatcher(d)
	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	defer cancelLeader()
	lead := writes([]string{"leader"}, func(k string) (string, error) { return b.Create(leaderCtx, rec("listing", k)) })
	waitQueued(t, b, 1)
	rest := writes(keysOf("f", 3), func(k string) (string, error) { return b.Create(context.Background(), rec("listing", k)) })
	waitQueued(t, b, 4)
	cancelLeader()
	a := collectAnswers(t, lead, 1)["leader"]
	if !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled leader: %q, %v; want context.Canceled", a.id, a.err)
	}
	waitQueued(t, b, 3)
	linger.pass()
	for k, a := range collectAnswers(t, rest, 3) {
		if a.err != nil || a.id != "r-"+k {
			t.Errorf("%s: %q, %v", k, a.id, a.err)
		}
	}
	calls := d.callsMade()
	if len(calls) != 1 || slices.Contains(calls[0].keys, "leader") || len(calls[0].keys) != 3 {
		t.Fatalf("calls %+v, want one of the three followers", calls)
	}
}

// Leadership passes on as often as leaders leave; a group everyone left
// is gone, and the next write opens a new one.
func TestBatcherEveryLeaderCancelled(t *testing.T) {
	d := &batchDouble{}
	b, linger, _ := newTestBatcher(d)
	var cancels []context.CancelFunc
	var chans []<-chan answer
	for i := range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		chans = append(chans, writes([]string{fmt.Sprint(i)}, func(k string) (string, error) { return b.Create(ctx, rec("listing", k)) }))
		waitQueued(t, b, i+1)
	}
	for i, cancel := range cancels {
		cancel()
		if a := collectAnswers(t, chans[i], 1)[fmt.Sprint(i)]; !errors.Is(a.err, context.Canceled) {
			t.Fatalf("write %d: %v, want context.Canceled", i, a.err)
		}
	}
	waitQueued(t, b, 0)
	linger.pass() // stopped lingers do not run; nothing is sent
	ch := writes([]string{"next"}, func(k string) (string, error) { return b.Create(context.Background(), rec("listing", k)) })
	waitQueued(t, b, 1)
	linger.pass()
	if a := collectAnswers(t, ch, 1)["next"]; a.err != nil || a.id != "r-next" {
		t.Fatalf("next: %q, %v", a.id, a.err)
	}
	if calls := d.callsMade(); len(calls) != 1 || !slices.Equal(calls[0].keys, []string{"next"}) {
		t.Fatalf("calls %+v, want one of next", calls)
	}
}

// A follower whose context ends before the call is taken out of it.
func TestBatcherCallerCancelledBeforeSending(t *testing.T) {
	d := &batchDouble{}
	b, linger, _ := newTestBatcher(d)
	first := writes([]string{"a"}, func(k string) (string, error) { return b.Create(context.Background(), rec("listing", k)) })
	waitQueued(t, b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	gone := writes([]string{"gone"}, func(k string) (string, error) { return b.Create(ctx, rec("listing", k)) })
	waitQueued(t, b, 2)
	cancel()
	if a := collectAnswers(t, gone, 1)["gone"]; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("cancelled write: %v, want context.Canceled", a.err)
	}
	waitQueued(t, b, 1)
	linger.pass()
	if a := collectAnswers(t, first, 1)["a"]; a.err != nil {
		t.Fatal(a.err)
	}
	if calls := d.callsMade(); len(calls) != 1 || !slices.Equal(calls[0].keys, []string{"a"}) {
		t.Fatalf("calls %+v, want one of a alone", calls)
	}
}

// A caller whose context ends while its call is in flight returns at once
// with its context's error (its write is in doubt, as a cancelled single
// call's); the call goes on for the others, whose contexts bound it.
func TestBatcherCallerCancelledAfterSending(t *testing.T) {
	d := &batchDouble{gate: make(chan struct{}), sent: make(chan batchCall, 1)}
	b, linger, _ := newTestBatcher(d)
	ctxs := map[string]context.Context{}
	cancels := map[string]context.CancelFunc{}
	for _, k := range []string{"a", "b", "c"} {
		ctxs[k], cancels[k] = context.WithCancel(context.Background())
		defer cancels[k]()
	}
	var chans []<-chan answer
	for i, k := range []string{"a", "b", "c"} {
		chans = append(chans, writes([]string{k}, func(k string) (string, error) { return b.Create(ctxs[k], rec("listing", k)) }))
		waitQueued(t, b, i+1)
	}
	linger.pass()
	call := <-d.sent
	// The leader (a) and a follower (b) stop waiting.
	cancels["b"]()
	if a := collectAnswers(t, chans[1], 1)["b"]; !errors.Is(a.err, context.Canceled) {
		t.Fatalf("b, cancelled in flight: %v, want context.Canceled", a.err)
	}
	cancels["a"]()
	if call.ctx.Err() != nil {
		t.Fatal("the batch call was cancelled while c still waits for it")
	}
	close(d.gate)
	if a := collectAnswers(t, chans[2], 1)["c"]; a.err != nil || a.id != "r-c" {
		t.Fatalf("c: %q, %v", a.id, a.err)
	}
	// The leader sent the call: it returns when the call does, with its
	// own item's result.
	if a := collectAnswers(t, chans[0], 1)["a"]; a.err != nil || a.id != "r-a" {
		t.Fatalf("a: %q, %v", a.id, a.err)
	}
}

// When every caller stopped waiting (a shutdown past its grace), the batch
// call is cancelled.
func TestBatcherCallCancelledWhenEveryCallerLeft(t *testing.T) {
	d := &batchDouble{gate: make(chan struct{}), sent: make(chan batchCall, 1)}
	defer close(d.gate)
	b, linger, m := newTestBatcher(d)
	ctx, cancel := context.WithCancel(context.Background())
	ch := writes(keysOf("k", 4), func(k string) (string, error) { return b.Create(ctx, rec("listing", k)) })
	waitQueued(t, b, 4)
	linger.pass()
	call := <-d.sent
	cancel()
	for k, a := range collectAnswers(t, ch, 4) {
		if !errors.Is(a.err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", k, a.err)
		}
	}
	if !errors.Is(context.Cause(call.ctx), errBatchAbandoned) {
		t.Fatalf("batch call's context: %v, want it abandoned", context.Cause(call.ctx))
	}
	if n := metricOf(t, m.batchCalls.WithLabelValues("create", string(sink.ClassCanceled))).GetCounter().GetValue(); n != 1 {
		t.Errorf("cancelled batch calls = %v, want 1", n)
	}
}

// A failure of the whole call is every item's: each write is in doubt.
func TestBatcherWholeCallErrorGoesToEveryItem(t *testing.T) {
	overloaded := &sink.Error{Op: "create batch", Status: http.StatusServiceUnavailable, Retryable: true, RetryAfter: 2 * time.Second}
	for _, c := range []struct {
		name   string
		answer func([]sink.BatchItem) ([]sink.BatchResult, error)
		check  func(error) bool
	}{
		{"503", func([]sink.BatchItem) ([]sink.BatchResult, error) { return nil, overloaded },
			func(err error) bool { return errors.Is(err, overloaded) }},
		{"too few results", func([]sink.BatchItem) ([]sink.BatchResult, error) { return []sink.BatchResult{{RemoteID: "x"}}, nil },
			func(err error) bool { return err != nil && sink.Classify(context.Background(), err).Class.Retryable() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &batchDouble{answer: c.answer}
			b, linger, _ := newTestBatcher(d)
			ch := writes(keysOf("k", 3), func(k string) (string, error) { return b.Create(context.Background(), rec("listing", k)) })
			waitQueued(t, b, 3)
			linger.pass()
			shared := 0
			for k, a := range collectAnswers(t, ch, 3) {
				if !c.check(a.err) || a.id != "" {
					t.Errorf("%s: %q, %v", k, a.id, a.err)
				}
				if sharedCall(a.err) {
					shared++
				}
			}
			if shared != 2 {
				t.Errorf("%d of 3 items see the call's failure as already counted, want 2 (all but one)", shared)
			}
		})
	}
}

// Each item's own failure goes to its caller only.
func TestBatcherPerItemErrors(t *testing.T) {
	refused := &sink.Error{Op: "update", Status: http.StatusUnprocessableEntity, Body: "title too long"}
	d := &batchDouble{answer: func(items []sink.BatchItem) ([]sink.BatchResult, error) {
		out := make([]sink.BatchResult, len(items))
		for i, it := range items {
			switch it.Record.Key {
			case "gone":
				out[i].Err = sink.ErrNotFound
			case "refused":
				out[i].Err = refused
			}
		}
		return out, nil
	}}
	b, linger, _ := newTestBatcher(d)
	ch := writes([]string{"ok1", "gone", "refused", "ok2"}, func(k string) (string, error) {
		return "", b.Update(context.Background(), "r-"+k, rec("listing", k))
	})
	waitQueued(t, b, 4)
	linger.pass()
	got := collectAnswers(t, ch, 4)
	if got["ok1"].err != nil || got["ok2"].err != nil {
		t.Errorf("ok items: %v, %v", got["ok1"].err, got["ok2"].err)
	}
	if !errors.Is(got["gone"].err, sink.ErrNotFound) {
		t.Errorf("gone: %v, want ErrNotFound", got["gone"].err)
	}
	if !errors.Is(got["refused"].err, refused) {
		t.Errorf("refused: %v, want the item's 422", got["refused"].err)
	}
	if n := len(d.callsMade()); n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
}

func TestBatchLingerIsValidated(t *testing.T) {
	for _, c := range []struct {
		linger time.Duration
		ok     bool
	}{{0, true}, {5 * time.Millisecond, true}, {time.Second, true}, {-time.Millisecond, false}, {1100 * time.Millisecond, false}} {
		err := Config{LeaseTTL: 10 * time.Second, BatchLinger: c.linger}.WithDefaults().Validate()
		if (err == nil) != c.ok {
			t.Errorf("batch_linger %s: %v, want ok %t", c.linger, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "worker.batch_linger") {
			t.Errorf("batch_linger %s: %v does not name the setting", c.linger, err)
		}
	}
}

// With tracing on, each write keeps its span ("sink create") and the batch
// call has one of its own under the span of the write that sent it.
func TestBatcherTracesTheBatchCall(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := Config{TracerProvider: tp, BatchLinger: time.Millisecond}.WithDefaults()
	d := &batchDouble{}
	_, sk, _ := traced(memory.New(memory.Config{}), batched(d, cfg, NewMetrics(nil)), cfg)
	if _, err := sk.Create(context.Background(), rec("listing", "traced")); err != nil {
		t.Fatal(err)
	}
	byName := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		byName[s.Name] = s
	}
	write, call := byName["sink create"], byName["sink batch create"]
	if !write.SpanContext.IsValid() || !call.SpanContext.IsValid() {
		t.Fatalf("spans %v, want sink create and sink batch create", tracingtest.Names(exp.GetSpans()))
	}
	if call.Parent.SpanID() != write.SpanContext.SpanID() {
		t.Errorf("batch span's parent %s, want the write's span %s", call.Parent.SpanID(), write.SpanContext.SpanID())
	}
	if n := len(d.callsMade()); n != 1 {
		t.Errorf("%d batch calls, want 1", n)
	}
}

// A failed batch call is one failure of the API, however many writes it
// carried: the breaker (which counts sink failures when no throttle judges
// the API's health) hears it from one item, not from every one, or a
// single 503 for a call of ten writes would open it at once.
func TestBatcherWholeCallFailureCountsOnceForTheBreaker(t *testing.T) {
	h := newHarness(t, stores()[1], nil)
	d := &batchDouble{answer: func([]sink.BatchItem) ([]sink.BatchResult, error) {
		return nil, &sink.Error{Op: "create batch", Status: http.StatusServiceUnavailable, Retryable: true}
	}}
	b, linger, _ := newTestBatcher(d)
	h.applier.sink = b
	outs := make(chan Outcome, 3)
	for _, k := range keysOf("b", 3) {
		go func() { outs <- h.applier.Apply(context.Background(), upsert(k, 1, "x"), 1) }()
	}
	waitQueued(t, b, 3)
	linger.pass()
	failures := 0
	for range 3 {
		out := <-outs
		if out.Result != ResultRetried {
			t.Errorf("outcome %s (%s), want a retry", out.Result, out.Reason)
		}
		if out.SinkFailure {
			failures++
		}
	}
	if failures != 1 {
		t.Errorf("%d of the 3 writes of one failed call counted as API failures, want 1", failures)
	}
}
