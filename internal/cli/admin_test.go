package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestAdminProfilerOnlyWhenAsked: /debug/pprof/ is served when admin.pprof
// is on and is a 404 otherwise; /metrics and /healthz are served either way.
func TestAdminProfilerOnlyWhenAsked(t *testing.T) {
	for _, profile := range []bool{false, true} {
		srv, err := startAdmin("127.0.0.1:0", newRegistry(), nil, nil, profile, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		get := func(path string) (int, string) {
			resp, err := http.Get("http://" + srv.Addr() + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		if code, body := get("/debug/pprof/"); profile != (code == http.StatusOK && strings.Contains(body, "goroutine")) {
			t.Errorf("pprof %v: /debug/pprof/ answered %d", profile, code)
		}
		if code, _ := get("/debug/pprof/cmdline"); profile != (code == http.StatusOK) {
			t.Errorf("pprof %v: /debug/pprof/cmdline answered %d", profile, code)
		}
		if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
			t.Errorf("pprof %v: /metrics answered %d", profile, code)
		}
		srv.Stop()
	}
}

// TestHealthzNamesAnUnreachableDependency: /healthz and /readyz answer 200
// while the real bus and store answer, and 503 naming the store once it is
// gone; /livez stays 200.
func TestHealthzNamesAnUnreachableDependency(t *testing.T) {
	b := rabbitmqtest.Open(t, rabbitmq.Config{URL: testenv.RabbitMQ(t), Namespace: testenv.UniqueName("healthz")}) // topology deleted afterwards
	client, err := eventsync.Open(eventsync.Config{Store: testenv.Redis(t), Namespace: testenv.UniqueName("healthz")},
		eventsync.WithBus(b), eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	st, err := client.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]healthCheck{"bus": busCheck(b, bus.Live), "store": storeCheck(st)}
	srv, err := startAdmin("127.0.0.1:0", newRegistry(), nil, checks, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, path := range []string{"/healthz", "/readyz", "/livez"} {
		if code, body := get(path); code != http.StatusOK || body != "ok\n" {
			t.Fatalf("%s with everything up: %d %q", path, code, body)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := get(path)
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "store: ") || strings.Contains(body, "bus:") {
			t.Fatalf("%s with the store closed: %d %q; want 503 naming the store only", path, code, body)
		}
	}
	if code, _ := get("/livez"); code != http.StatusOK {
		t.Fatalf("/livez with the store closed: %d; want 200 (a restart would not bring the store back)", code)
	}
}
