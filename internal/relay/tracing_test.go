package relay_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/internal/tracing"
)

// headerRecorder keeps the headers of every message it is given; its
// first publish fails.
type headerRecorder struct {
	mu      sync.Mutex
	calls   int
	headers []map[string]string
}

func (h *headerRecorder) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if h.calls == 1 {
		return context.DeadlineExceeded
	}
	for _, m := range msgs {
		h.headers = append(h.headers, m.Headers)
	}
	return nil
}

func (h *headerRecorder) got() []map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]string(nil), h.headers...)
}

// TestRelayStartsATracePerRow: each published row begins a trace of its
// own whose context travels in the message's traceparent header, linked to
// its batch's publish span; a failed publish leaves its spans in error.
func TestRelayStartsATracePerRow(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	src := newSQLite(t)
	insert(t, src, 1, 3)
	pub := &headerRecorder{}
	r, err := relay.New(src, pub, relay.Config{BatchSize: 10, Concurrency: 1, PollInterval: 20 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond, Logger: quiet, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, r)
	waitFor(t, "3 rows published", func() bool { return r.Stats().Published == 3 })
	stop()

	byTrace := map[trace.TraceID]tracetest.SpanStub{}
	sends := map[trace.SpanID]tracetest.SpanStub{}
	failed := 0
	for _, s := range exp.GetSpans() {
		switch s.Name {
		case "create live":
			if s.Status.Code == codes.Error {
				failed++
				continue
			}
			if s.Parent.IsValid() {
				t.Errorf("row span has a parent %s; each change starts its own trace", s.Parent.SpanID())
			}
			byTrace[s.SpanContext.TraceID()] = s
		case "send live":
			sends[s.SpanContext.SpanID()] = s
		}
	}
	if failed != 3 {
		t.Errorf("%d row spans in error, want the 3 of the failed publish", failed)
	}
	headers := pub.got()
	if len(headers) != 3 || len(byTrace) != 3 {
		t.Fatalf("%d messages, %d traces of published rows; want 3 and 3", len(headers), len(byTrace))
	}
	for _, h := range headers {
		sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
		row, ok := byTrace[sc.TraceID()]
		if !ok || row.SpanContext.SpanID() != sc.SpanID() {
			t.Fatalf("traceparent %q names no row span", h["traceparent"])
		}
		if len(row.Links) != 1 {
			t.Fatalf("row span has %d links, want its batch's", len(row.Links))
		}
		if _, ok := sends[row.Links[0].SpanContext.SpanID()]; !ok {
			t.Errorf("row span links to %s, no batch span", row.Links[0].SpanContext.SpanID())
		}
	}
}
