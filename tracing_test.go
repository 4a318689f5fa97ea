package eventsync_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/tracing/tracingtest"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store/memory"
	"github.com/eventsync/eventsync/throttle"
)

// TestOneChangeIsOneTrace follows one change from the outbox row to the
// API call: a relay publishes it through a real RabbitMQ, a worker applies
// it to the fake API, and every span of that change (the relay's row
// span, the worker's delivery, lease, sink call, HTTP request and commit)
// shares one trace id, each under the one before; the fake API received
// the HTTP span's traceparent.
func TestOneChangeIsOneTrace(t *testing.T) {
	b := rabbitmqtest.Open(t, rabbitmq.Config{}) // skips without RabbitMQ, unless required
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	quiet := slog.New(slog.DiscardHandler)

	api, err := fakeapi.Start(t.Context(), fakeapi.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	ctx := context.Background()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DB().Exec(`CREATE TABLE listings (id INTEGER PRIMARY KEY, title TEXT)`); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id"}); err != nil {
		t.Fatal(err)
	}
	sinkCfg, err := httpsink.ParseConfig(fmt.Appendf(nil, "defaults: {base_url: %q, timeout: 5s}\nentities:\n  listing: {collection: listings}\n", api.URL))
	if err != nil {
		t.Fatal(err)
	}
	client, err := eventsync.Open(eventsync.Config{Sink: sinkCfg},
		eventsync.WithBus(b), eventsync.WithStore(memory.New(memory.Config{})), eventsync.WithSource(src),
		eventsync.WithLimiter(throttle.NewMemoryLimiter(time.Now)), eventsync.WithTracerProvider(tp), eventsync.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	relay, err := client.NewRelay(ctx, eventsync.RelayConfig{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	worker, err := client.NewWorker(ctx, eventsync.WithWorkerID("traced"))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{relay.Run, worker.Run} {
		wg.Go(func() {
			if err := run(runCtx); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
		}
	}
	t.Cleanup(halt)

	if _, err := src.DB().Exec(`INSERT INTO listings (id, title) VALUES (7, 'traced')`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(api.Records("listings")) == 0 || worker.Status().Results["applied"] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the change never reached the fake API")
		}
		time.Sleep(20 * time.Millisecond)
	}
	halt()

	// The relay's span for the row begins the change's trace.
	spans := exp.GetSpans()
	var row tracetest.SpanStub
	for _, s := range spans {
		if s.Name == "create live" && tracingtest.Attr(s, "eventsync.key") == "7" {
			row = s
		}
	}
	if !row.SpanContext.IsValid() {
		t.Fatalf("no relay span for the row among %v", tracingtest.Names(spans))
	}
	traceID := row.SpanContext.TraceID()
	inTrace := map[string][]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() == traceID {
			inTrace[s.Name] = append(inTrace[s.Name], s)
		} else if tracingtest.Attr(s, "eventsync.key") == "7" {
			t.Errorf("span %q of the change is in trace %s, not the change's %s", s.Name, s.SpanContext.TraceID(), traceID)
		}
	}
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		if len(inTrace[name]) != 1 {
			var names []string
			for n, ss := range inTrace {
				names = append(names, fmt.Sprintf("%s ×%d", n, len(ss)))
			}
			t.Fatalf("%d %q spans in the change's trace, want 1 (the trace has %v)", len(inTrace[name]), name, names)
		}
		return inTrace[name][0]
	}
	child := func(s, parent tracetest.SpanStub) {
		t.Helper()
		if s.Parent.SpanID() != parent.SpanContext.SpanID() {
			t.Errorf("%q span's parent is %s, want %q (%s)", s.Name, s.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
		}
	}
	process := one("process live")
	child(process, row)
	if process.SpanKind != trace.SpanKindConsumer || tracingtest.Attr(process, "eventsync.result") != "applied" {
		t.Errorf("process span: kind %s, result %q; want consumer, applied", process.SpanKind, tracingtest.Attr(process, "eventsync.result"))
	}
	child(one("lease"), process)
	call := one("sink create")
	child(call, process)
	request := one("HTTP POST")
	child(request, call)
	child(one("commit"), process)

	// The API received the HTTP span's context.
	want := fmt.Sprintf("00-%s-%s-01", traceID, request.SpanContext.SpanID())
	got := api.TracedRequests()
	if len(got) != 1 || got[0].Traceparent != want {
		t.Fatalf("the fake API received %+v, want one request with traceparent %s", got, want)
	}
}
