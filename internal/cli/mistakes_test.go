package cli

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// These tests are the mistakes a new user made in issue 13, each with the
// message it must now get.

// sqliteApp makes an application database with a listings table.
func sqliteApp(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE listings (id INTEGER PRIMARY KEY, title TEXT)`); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestResyncMistypedTable: a table that does not exist fails before the
// run starts, naming it and the closest table, with no "interrupted after
// 0 of 0 rows" report.
func TestResyncMistypedTable(t *testing.T) {
	t.Parallel()
	app := sqliteApp(t)
	code, out, errOut := run(t, "", "resync", "--source", "sqlite://"+app, "--data-dir", t.TempDir(),
		"--table", "listngs", "--entity", "listing", "--key", "id")
	if code == 0 || strings.Contains(out+errOut, "interrupted") || strings.Contains(out, "resync ") {
		t.Fatalf("exit %d, stdout %q, stderr %q: want a failure and no run report", code, out, errOut)
	}
	if !strings.Contains(errOut, `"listngs"`) || !strings.Contains(errOut, "did you mean listings?") {
		t.Fatalf("stderr %q: want the missing table named and listings suggested", errOut)
	}
}

// TestVerifyUnknownEntity: an entity outside the sink configuration is
// refused before anything is compared (it used to print a DIVERGED report).
func TestVerifyUnknownEntity(t *testing.T) {
	t.Parallel()
	app := sqliteApp(t)
	cfg := filepath.Join(t.TempDir(), "eventsync.yaml")
	if err := os.WriteFile(cfg, []byte("sink:\n  defaults:\n    base_url: http://127.0.0.1:1\n  entities:\n    listing:\n      collection: listings\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "verify", "--config", cfg, "--entity", "lsting",
		"--source", "sqlite://"+app, "--table", "listings", "--key", "id")
	if code != verifyCannot || strings.Contains(out, "DIVERGED") {
		t.Fatalf("exit %d, stdout %q: want exit %d (could not check) and no report", code, out, verifyCannot)
	}
	if !strings.Contains(errOut, "entity lsting is not in the sink configuration") || !strings.Contains(errOut, "did you mean listing?") {
		t.Fatalf("stderr %q: want the unknown entity named and listing suggested", errOut)
	}
}

// TestWorkerLeaseShorterThanSinkTimeout: a lease that cannot cover one
// call is refused at start, naming both settings.
func TestWorkerLeaseShorterThanSinkTimeout(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "eventsync.yaml")
	yaml := "bus: amqp://guest:guest@127.0.0.1:1/\nstore: redis://127.0.0.1:1\nworker:\n  lease_ttl: 1s\n" +
		"sink:\n  defaults:\n    base_url: http://127.0.0.1:1\n    timeout: 5s\n  entities:\n    listing:\n      collection: listings\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, "", "worker", "--config", cfg, "--admin", "off")
	if code != 2 {
		t.Fatalf("exit %d, stderr %q: want 2 (configuration error)", code, errOut)
	}
	for _, want := range []string{"worker.lease_ttl: 1s is shorter than the sink timeout 5s (sink.defaults.timeout)", "set it with the config key worker.lease_ttl or EVENTSYNC_WORKER_LEASE_TTL"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

// TestUnreachableRedisIsOneError: an unreachable Redis prints the error
// and its hint, not go-redis's pool log lines before them.
func TestUnreachableRedisIsOneError(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "", "ctl", "pause", "--stream", "live", "--store", "redis://127.0.0.1:1", "--data-dir", t.TempDir())
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	var errorLines []string
	for _, l := range lines {
		if !strings.Contains(l, "embedded NATS JetStream started") { // an info line of the embedded bus
			errorLines = append(errorLines, l)
		}
	}
	if code != 1 || out != "" || len(errorLines) != 2 {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 1 and exactly the error and its hint", code, out, errOut)
	}
	if !strings.HasPrefix(errorLines[0], "eventsync ctl pause: open the state store: connect to Redis at 127.0.0.1:1") ||
		errorLines[1] != "set it with --store, the config key store, or EVENTSYNC_STORE" {
		t.Fatalf("stderr:\n%s\nwant the Redis error and the store hint", errOut)
	}
}
