package cli

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestAdminProfilerOnlyWhenAsked: /debug/pprof/ is served when admin.pprof
// is on and is a 404 otherwise; /metrics and /healthz are served either way.
func TestAdminProfilerOnlyWhenAsked(t *testing.T) {
	for _, profile := range []bool{false, true} {
		srv, err := startAdmin("127.0.0.1:0", newRegistry(), nil, profile, slog.New(slog.DiscardHandler))
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
