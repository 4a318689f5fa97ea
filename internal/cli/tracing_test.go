package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTracingSettingsCheckedAtStart: an exporter eventsync cannot use
// stops the worker and the relay at start with a usage error naming the
// variable, before they connect to anything. (Not parallel: it sets the
// process's environment.)
func TestTracingSettingsCheckedAtStart(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "eventsync.yaml")
	yaml := "bus: amqp://guest:guest@127.0.0.1:1/\nstore: redis://127.0.0.1:1\nsource: sqlite:///nonexistent/app.db\n" +
		"sink:\n  defaults:\n    base_url: http://127.0.0.1:1\n  entities:\n    listing:\n      collection: listings\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "jaeger")
	for _, cmd := range []string{"worker", "relay"} {
		code, _, errOut := run(t, "", cmd, "--config", cfg, "--admin", "off")
		if code != 2 || !strings.Contains(errOut, `OTEL_TRACES_EXPORTER="jaeger": unknown exporter "jaeger"; use otlp, console or none`) {
			t.Errorf("%s: exit %d, stderr %q; want 2 naming the variable", cmd, code, errOut)
		}
	}
}
