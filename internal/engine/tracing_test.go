package engine

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/tracing"
	"github.com/eventsync/eventsync/internal/tracing/tracingtest"
)

// TestWorkerContinuesTheMessagesTrace: a delivery's span is a child of
// the span whose context its producer put in the message headers, and the
// lease, API and commit calls are children of the delivery's span; a
// parked event's span says so with an error status.
func TestWorkerContinuesTheMessagesTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	h := newHarness(t, stores()[1], nil)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	runWorker(t, h, b, func(c *Config) { c.TracerProvider = tp })

	// The producer's span, as the relay makes one.
	pctx, producer := tp.Tracer("test").Start(context.Background(), "create live", trace.WithSpanKind(trace.SpanKindProducer))
	headers := map[string]string{}
	tracing.Inject(pctx, headers)
	producer.End()
	if headers["traceparent"] == "" {
		t.Fatalf("no traceparent injected: %v", headers)
	}
	poison := bus.Message{Body: []byte(`{"entity":"listing"}`), Headers: map[string]string{}}
	tracing.Inject(pctx, poison.Headers)
	if err := b.Publish(context.Background(), bus.Live, bus.Message{Body: upsert("traced", 1, "t"), Headers: headers}, poison); err != nil {
		t.Fatal(err)
	}
	traceID := producer.SpanContext().TraceID()

	var spans tracetest.SpanStubs
	waitUntil(t, 10*time.Second, "the applied and the parked delivery traced", func() bool {
		spans = exp.GetSpans()
		n := 0
		for _, s := range spans {
			if s.Name == "process live" {
				n++
			}
		}
		return n == 2
	})
	byName := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %q in trace %s, want the producer's %s", s.Name, s.SpanContext.TraceID(), traceID)
		}
		byName[s.Name] = append(byName[s.Name], s)
	}
	var applied, parked tracetest.SpanStub
	for _, s := range byName["process live"] {
		if s.Parent.SpanID() != producer.SpanContext().SpanID() {
			t.Errorf("process span's parent %s, want the producer's span %s", s.Parent.SpanID(), producer.SpanContext().SpanID())
		}
		if s.SpanKind != trace.SpanKindConsumer {
			t.Errorf("process span of kind %s, want consumer", s.SpanKind)
		}
		switch tracingtest.Attr(s, tracing.AttrResult) {
		case string(ResultApplied):
			applied = s
		case string(ResultParked):
			parked = s
		}
	}
	if !applied.SpanContext.IsValid() || !parked.SpanContext.IsValid() {
		t.Fatalf("want one applied and one parked process span, got %+v", byName["process live"])
	}
	if parked.Status.Code != codes.Error {
		t.Errorf("parked span status %v, want error", parked.Status)
	}
	if got := tracingtest.Attr(applied, tracing.AttrKey); got != "traced" {
		t.Errorf("applied span key %q, want traced", got)
	}
	for _, name := range []string{"lease", "sink create", "commit"} {
		if len(byName[name]) != 1 {
			t.Fatalf("%d %q spans, want 1 (spans: %v)", len(byName[name]), name, tracingtest.Names(spans))
		}
		if s := byName[name][0]; s.Parent.SpanID() != applied.SpanContext.SpanID() {
			t.Errorf("%q span's parent %s, want the process span %s", name, s.Parent.SpanID(), applied.SpanContext.SpanID())
		}
	}
}
