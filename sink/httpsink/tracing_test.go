package httpsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// TestTracedSinkSendsTraceparent: with a tracer provider, each request is
// a client span under the caller's span and the API receives its
// traceparent; the caller's own HTTP client is left untraced.
func TestTracedSinkSendsTraceparent(t *testing.T) {
	t.Parallel()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	cfg, err := httpsink.ParseConfig(fmt.Appendf(nil, "defaults: {base_url: %q, timeout: 5s}\nentities:\n  listing: {collection: listings}\n", api.URL))
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	own := &http.Client{Transport: &http.Transport{}}
	// The provider is applied after the client, whatever the order.
	s, err := httpsink.New(cfg, httpsink.WithTracerProvider(tp), httpsink.WithHTTPClient(own), httpsink.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)

	ctx, parent := tp.Tracer("test").Start(context.Background(), "apply")
	if _, err := s.Create(ctx, sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	if _, ok := own.Transport.(*http.Transport); !ok {
		t.Fatalf("the caller's client was changed: transport %T", own.Transport)
	}

	var client tracetest.SpanStub
	for _, sp := range exp.GetSpans() {
		if sp.SpanKind == trace.SpanKindClient {
			client = sp
		}
	}
	if client.Parent.SpanID() != parent.SpanContext().SpanID() || client.SpanContext.TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("HTTP client span %q (parent %s) is not under the caller's span %s", client.Name, client.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	got := api.TracedRequests()
	want := fmt.Sprintf("00-%s-%s-01", client.SpanContext.TraceID(), client.SpanContext.SpanID())
	if len(got) != 1 || got[0].Traceparent != want || got[0].Method != http.MethodPost {
		t.Fatalf("the API received %+v, want one POST with traceparent %s", got, want)
	}
}
