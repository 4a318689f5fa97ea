package resync_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/tracing"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store/memory"
)

// pageRecorder keeps the headers of each published page's messages.
type pageRecorder struct {
	mu    sync.Mutex
	pages [][]map[string]string
}

func (p *pageRecorder) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	page := make([]map[string]string, len(msgs))
	for i, m := range msgs {
		page[i] = m.Headers
	}
	p.pages = append(p.pages, page)
	return nil
}

// TestEachPageIsATrace: every published page is the root of a trace of
// its own, and each of its events carries that page's trace context.
func TestEachPageIsATrace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.DB().ExecContext(ctx, `CREATE TABLE listings (id TEXT PRIMARY KEY, title TEXT, secret TEXT)`); err != nil {
		t.Fatal(err)
	}
	for i := range 250 {
		if _, err := src.DB().ExecContext(ctx, `INSERT INTO listings VALUES (?, 't', 'pw')`, fmt.Sprintf("k%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	pub := &pageRecorder{}
	sp := spec()
	sp.PageSize, sp.RunID = 100, "traced"
	if _, err := resync.Run(ctx, src, pub, memory.New(memory.Config{}), sp, resync.WithTracerProvider(tp)); err != nil {
		t.Fatal(err)
	}

	pages := map[trace.SpanID]tracetest.SpanStub{}
	traces := map[trace.TraceID]bool{}
	for _, s := range exp.GetSpans() {
		if s.Name != "resync page" {
			continue
		}
		if s.Parent.IsValid() {
			t.Errorf("page span has a parent %s; each page starts a trace", s.Parent.SpanID())
		}
		pages[s.SpanContext.SpanID()] = s
		traces[s.SpanContext.TraceID()] = true
	}
	if len(pub.pages) != 3 || len(pages) != 3 || len(traces) != 3 {
		t.Fatalf("%d pages published, %d page spans in %d traces; want 3, 3, 3", len(pub.pages), len(pages), len(traces))
	}
	for i, page := range pub.pages {
		var first trace.SpanContext
		for j, h := range page {
			sc := trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
			span, ok := pages[sc.SpanID()]
			if !ok || span.SpanContext.TraceID() != sc.TraceID() {
				t.Fatalf("page %d event %d carries traceparent %q, no page span's", i, j, h["traceparent"])
			}
			if j == 0 {
				first = sc
			} else if sc.SpanID() != first.SpanID() {
				t.Fatalf("page %d: events carry different pages' contexts", i)
			}
		}
	}
}
