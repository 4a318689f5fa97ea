package throttle_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/throttle"
)

// batchAPI is a scriptedSink with bulk endpoints: each batch call is one
// arrival, answered by answer (every item written when nil).
type batchAPI struct {
	scriptedSink
	answer func(items []sink.BatchItem) ([]sink.BatchResult, error)
}

func (a *batchAPI) MaxBatch(entity string, op sink.Op) int { return 50 }

func (a *batchAPI) WriteBatch(_ context.Context, entity string, op sink.Op, items []sink.BatchItem) ([]sink.BatchResult, error) {
	if err := a.call(); err != nil {
		return nil, err
	}
	if a.answer != nil {
		return a.answer(items)
	}
	return make([]sink.BatchResult, len(items)), nil
}

func batchOf(n int) []sink.BatchItem {
	items := make([]sink.BatchItem, n)
	for i := range items {
		items[i] = sink.BatchItem{Record: record(i)}
	}
	return items
}

func newBatchThrottle(t *testing.T, api sink.Sink, lim throttle.Limiter) (*throttle.Sink, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := throttle.New(api, throttle.Config{}, throttle.Options{Name: "api", Limiter: lim, Logger: quiet, Metrics: throttle.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg
}

// A batch call passes through as one call, at its stream's priority, with
// every item's result.
func TestBatchIsOneCall(t *testing.T) {
	t.Parallel()
	refused := &sink.Error{Op: "create", Status: http.StatusUnprocessableEntity}
	api := &batchAPI{answer: func(items []sink.BatchItem) ([]sink.BatchResult, error) {
		out := make([]sink.BatchResult, len(items))
		for i := range out {
			out[i].RemoteID = items[i].Record.Key
		}
		out[3].Err = refused
		return out, nil
	}}
	s, reg := newBatchThrottle(t, api, throttle.NewMemoryLimiter(nil))
	if n := s.MaxBatch("listing", sink.OpCreate); n != 50 {
		t.Fatalf("MaxBatch = %d, want the wrapped sink's 50", n)
	}
	ctx := bus.WithStream(context.Background(), bus.Resync)
	results, err := s.WriteBatch(ctx, "listing", sink.OpCreate, batchOf(40))
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 40 || results[39].RemoteID != "39" || !errors.Is(results[3].Err, refused) {
		t.Fatalf("results not passed through: %d, %+v", len(results), results[:4])
	}
	if n := len(api.arrivals()); n != 1 {
		t.Fatalf("%d calls reached the API, want 1", n)
	}
	// One item's 422 says nothing of the API's health: the call is ok.
	if n := counter(t, reg, "eventsync_throttle_calls_total", "result", "ok"); n != 1 {
		t.Fatalf("calls_total{result=ok} = %v, want 1 (one batch call)", n)
	}
	if n := counter(t, reg, "eventsync_throttle_calls_total", "priority", "resync"); n != 1 {
		t.Fatalf("calls_total{priority=resync} = %v, want 1", n)
	}
}

// An item refused with 429 holds every caller, as a 429 of a single call
// would; the batch still returns every item's result.
func TestBatchItemRateLimitedHolds(t *testing.T) {
	t.Parallel()
	api := &batchAPI{answer: func(items []sink.BatchItem) ([]sink.BatchResult, error) {
		out := make([]sink.BatchResult, len(items))
		out[1].Err = &sink.Error{Op: "create", Status: http.StatusTooManyRequests, Retryable: true, RetryAfter: time.Second}
		out[2].Err = &sink.Error{Op: "create", Status: http.StatusTooManyRequests, Retryable: true, RetryAfter: time.Hour}
		return out, nil
	}}
	s, reg := newBatchThrottle(t, api, throttle.NewMemoryLimiter(nil))
	before := time.Now()
	results, err := s.WriteBatch(context.Background(), "listing", sink.OpUpdate, batchOf(3))
	if err != nil || len(results) != 3 || results[0].Err != nil || results[1].Err == nil {
		t.Fatalf("WriteBatch = %+v, %v", results, err)
	}
	if n := counter(t, reg, "eventsync_throttle_holds_total", "reason", "retry_after"); n != 1 {
		t.Fatalf("holds_total{reason=retry_after} = %v, want 1", n)
	}
	// The longest Retry-After, capped by max_hold (5 min).
	if held := s.Stats().HeldUntil.Sub(before); held < 4*time.Minute {
		t.Fatalf("held for %s, want the longest Retry-After (capped at 5m)", held)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Create(ctx, record(9)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call during the hold = %v, want it held until its deadline", err)
	}
	if n := len(api.arrivals()); n != 1 {
		t.Fatalf("%d calls reached the API, want only the batch", n)
	}
}

// A failure of the whole call is returned as it is, and judged: an outage
// answer is an overload, not a success.
func TestBatchWholeCallFailure(t *testing.T) {
	t.Parallel()
	down := &sink.Error{Op: "create", Status: http.StatusServiceUnavailable, Retryable: true}
	api := &batchAPI{scriptedSink: scriptedSink{fail: func(int) error { return down }}}
	s, reg := newBatchThrottle(t, api, throttle.NewMemoryLimiter(nil))
	results, err := s.WriteBatch(context.Background(), "listing", sink.OpCreate, batchOf(5))
	if !errors.Is(err, down) || results != nil {
		t.Fatalf("WriteBatch = %v, %v; want the 503 and no results", results, err)
	}
	if n := counter(t, reg, "eventsync_throttle_calls_total", "result", string(sink.ClassOverloaded)); n != 1 {
		t.Fatalf("calls_total{result=overloaded} = %v, want 1", n)
	}
}

// A batch not admitted (held, and its context ends) never reaches the API.
func TestBatchNotAdmitted(t *testing.T) {
	t.Parallel()
	lim := throttle.NewMemoryLimiter(nil)
	api := &batchAPI{}
	s, _ := newBatchThrottle(t, api, lim)
	if err := lim.Hold(context.Background(), "api", time.Now().Add(time.Hour), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	results, err := s.WriteBatch(ctx, "listing", sink.OpDelete, batchOf(2))
	if !errors.Is(err, context.DeadlineExceeded) || results != nil {
		t.Fatalf("WriteBatch during a hold = %v, %v; want context.DeadlineExceeded", results, err)
	}
	if n := len(api.arrivals()); n != 0 {
		t.Fatalf("%d calls reached the API during the hold", n)
	}
}

// Around a sink without bulk endpoints the throttle offers none.
func TestBatchNeedsABatchSink(t *testing.T) {
	t.Parallel()
	s, _ := newBatchThrottle(t, &scriptedSink{}, throttle.NewMemoryLimiter(nil))
	for _, op := range []sink.Op{sink.OpCreate, sink.OpUpdate, sink.OpDelete} {
		if n := s.MaxBatch("listing", op); n != 0 {
			t.Fatalf("MaxBatch(%s) = %d, want 0", op, n)
		}
	}
	if _, err := s.WriteBatch(context.Background(), "listing", sink.OpCreate, batchOf(1)); !errors.Is(err, throttle.ErrBatchUnsupported) {
		t.Fatalf("WriteBatch = %v, want ErrBatchUnsupported", err)
	}
}
