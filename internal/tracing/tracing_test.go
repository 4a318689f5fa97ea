package tracing_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/eventsync/eventsync/internal/tracing"
)

// setenv sets vars for the test and clears the other variables FromEnv,
// the SDK and the exporter read (tests that call it cannot be parallel).
func setenv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "")
			_ = os.Unsetenv(name)
		}
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestOffUnlessConfigured(t *testing.T) {
	for name, vars := range map[string]map[string]string{
		"nothing set":        {},
		"only a service":     {"OTEL_SERVICE_NAME": "x"},
		"exporter none":      {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
		"SDK disabled":       {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
		"empty exporter set": {"OTEL_TRACES_EXPORTER": " , "},
	} {
		setenv(t, vars)
		tp, set, err := tracing.FromEnv(context.Background(), io.Discard, "eventsync-test", "v0")
		if err != nil || tp != nil || len(set.Exporters) != 0 {
			t.Errorf("%s: provider %v, settings %+v, err %v; want tracing off", name, tp, set, err)
		}
	}
}

func TestRefusesWhatItCannotExport(t *testing.T) {
	for _, vars := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http"},
	} {
		setenv(t, vars)
		tp, _, err := tracing.FromEnv(context.Background(), io.Discard, "eventsync-test", "v0")
		if err == nil || tp != nil {
			t.Errorf("%v: provider %v, err %v; want an error", vars, tp, err)
		}
	}
}

// TestExportsOverOTLPHTTP: an OTLP endpoint alone turns tracing on, and
// Shutdown flushes the spans to it.
func TestExportsOverOTLPHTTP(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	setenv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL})
	tp, set, err := tracing.FromEnv(context.Background(), io.Discard, "eventsync-test", "v0")
	if err != nil || tp == nil {
		t.Fatalf("provider %v, err %v; want tracing on", tp, err)
	}
	if strings.Join(set.Exporters, ",") != "otlp" || set.Endpoint != collector.URL {
		t.Errorf("settings %+v", set)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "one")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 1 || paths[0] != "/v1/traces" {
		t.Fatalf("the collector received %v, want one export to /v1/traces", paths)
	}
}

// grpcCollector counts the spans exported to it over OTLP/gRPC.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
}

func (c *grpcCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				c.names = append(c.names, sp.Name)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestExportsOverOTLPGRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc exports to a
// collector's gRPC port.
func TestExportsOverOTLPGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	col := &grpcCollector{}
	coltracepb.RegisterTraceServiceServer(srv, col)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	setenv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
	})
	tp, _, err := tracing.FromEnv(context.Background(), io.Discard, "eventsync-test", "v0")
	if err != nil || tp == nil {
		t.Fatalf("provider %v, err %v; want tracing on", tp, err)
	}
	_, span := tp.Tracer("test").Start(context.Background(), "over-grpc")
	span.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.names) != 1 || col.names[0] != "over-grpc" {
		t.Fatalf("the collector received spans %v, want [over-grpc]", col.names)
	}
}

// TestConsoleExporterAndServiceName: the console exporter writes spans as
// JSON; OTEL_SERVICE_NAME overrides the default service name.
func TestConsoleExporterAndServiceName(t *testing.T) {
	for _, tc := range []struct {
		vars    map[string]string
		service string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, "eventsync-test"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "sync-eu"}, "sync-eu"},
	} {
		var out bytes.Buffer
		setenv(t, tc.vars)
		tp, _, err := tracing.FromEnv(context.Background(), &out, "eventsync-test", "v0")
		if err != nil || tp == nil {
			t.Fatalf("%v: provider %v, err %v", tc.vars, tp, err)
		}
		_, span := tp.Tracer("test").Start(context.Background(), "console-span")
		span.End()
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := out.String(); !strings.Contains(s, `"console-span"`) || !strings.Contains(s, `"`+tc.service+`"`) {
			t.Errorf("%v: console output lacks the span or service %q:\n%s", tc.vars, tc.service, s)
		}
	}
}

func TestHeadersCarryTheTraceContext(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3},
		SpanID:     trace.SpanID{4, 5, 6},
		TraceFlags: trace.FlagsSampled,
	})
	headers := map[string]string{"x-eventsync-attempt": "2"}
	tracing.Inject(trace.ContextWithSpanContext(context.Background(), sc), headers)
	if want := "00-01020300000000000000000000000000-0405060000000000-01"; headers["traceparent"] != want {
		t.Fatalf("traceparent %q, want %q", headers["traceparent"], want)
	}
	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), headers))
	if !got.IsRemote() || got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() {
		t.Fatalf("extracted %+v, want %+v (remote)", got, sc)
	}
	if none := trace.SpanContextFromContext(tracing.Extract(context.Background(), map[string]string{})); none.IsValid() {
		t.Fatalf("extracted %+v from no headers", none)
	}
}
