package cli

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// TestHelpVersionCompletion checks help in its three spellings, the
// version, and the completion scripts.
func TestHelpVersionCompletion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{}, []string{"Usage:\n  eventsync <command> [flags]", "worker ", "Exit status:\n  0  success", "2  usage error"}},
		{[]string{"help"}, []string{"Exit status:", "completion "}},
		{[]string{"help", "worker"}, []string{"Usage:\n  eventsync worker --config FILE [flags]", "--streams string", "-h, --help", "Connection flags", "--bus URL"}},
		{[]string{"worker", "-h"}, []string{"Usage:\n  eventsync worker --config FILE [flags]", "--concurrency int"}},
		{[]string{"ctl", "parked", "-h"}, []string{"eventsync ctl parked <command> [flags]", "list ", "show ", "replay ", "purge "}},
		{[]string{"ctl", "parked", "show", "-h"}, []string{"--id string", "(see ctl parked list) (required)", "--bus URL", "--config FILE"}},
		{[]string{"version"}, []string{"eventsync dev (commit "}},
		{[]string{"--version"}, []string{"eventsync dev (commit "}},
		{[]string{"completion", "bash"}, []string{"bash completion"}},
		{[]string{"completion", "zsh"}, []string{"#compdef eventsync"}},
		{[]string{"completion", "fish"}, []string{"complete -c eventsync"}},
		{[]string{"completion", "powershell"}, []string{"Register-ArgumentCompleter"}},
		{[]string{"__complete", "ctl", "pause", "--stream", ""}, []string{"live\nresync\n"}},
	} {
		code, out, errOut := run(t, "", tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d, stderr %q", tc.args, code, errOut)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: stdout lacks %q:\n%s", tc.args, w, out)
			}
		}
	}
	// Flags appear only where they act.
	_, out, _ := run(t, "", "ctl", "parked", "show", "-h")
	for _, absent := range []string{"--store", "--since", "--yes", "--source"} {
		if strings.Contains(out, absent) {
			t.Errorf("ctl parked show -h lists %s, which it does not use:\n%s", absent, out)
		}
	}
	_, out, _ = run(t, "", "outbox", "install", "-h")
	for _, absent := range []string{"--bus", "--store", "--namespace", "--data-dir"} {
		if strings.Contains(out, absent) {
			t.Errorf("outbox install -h lists %s, which it does not use:\n%s", absent, out)
		}
	}
	_, out, _ = run(t, "", "relay", "-h")
	if strings.Contains(out, "metrics-addr") || !strings.Contains(out, `--admin string`) {
		t.Errorf("relay -h should show --admin, not its deprecated alias:\n%s", out)
	}
}

// TestMistakesAreUsageErrorsWithSuggestions: a mistyped command or flag, a
// missing required flag or a stray argument exits 2 with one line that
// says what to type instead.
func TestMistakesAreUsageErrorsWithSuggestions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"wrker"}, `eventsync: unknown command "wrker" for "eventsync"; did you mean worker?`},
		{[]string{"ctl", "pase"}, `eventsync ctl: unknown command "pase" for "eventsync ctl"; did you mean pause?`},
		{[]string{"ctl", "parked", "lsit"}, `did you mean list?`},
		{[]string{"help", "wroker"}, `did you mean worker?`},
		{[]string{"worker", "--metrics-addr", "off"}, "eventsync worker: unknown flag: --metrics-addr; did you mean --admin?"},
		{[]string{"relay", "--admni", "off"}, "unknown flag: --admni; did you mean --admin?"},
		{[]string{"worker", "--stream", "live"}, "unknown flag: --stream; did you mean --streams?"},
		{[]string{"publish", "--streams", "live"}, "unknown flag: --streams; did you mean --stream?"},
		{[]string{"relay", "--conc", "2"}, "unknown flag: --conc; did you mean --concurrency?"},
		{[]string{"worker", "-streams", "live"}, "did you mean --streams?"},
		{[]string{"worker", "--zzzzzz"}, `unknown flag: --zzzzzz; run "eventsync worker -h" for the flags`},
		{[]string{"resync", "--table", "t"}, `eventsync resync: missing --entity, --key; run "eventsync resync -h"`},
		{[]string{"ctl", "parked", "show"}, "missing --id"},
		{[]string{"outbox", "remove-trigger", "--source", "sqlite://x.db"}, "missing --table"},
		{[]string{"publish", "a.ndjson", "b.ndjson"}, `unexpected argument(s) "b.ndjson"`},
		{[]string{"demo", "--entities", "0"}, "--entities 0: must be at least 1"},
		{[]string{"fakeapi", "--error-rate", "2"}, "invalid --error-rate"},
		{[]string{"worker", "--config", filepath.Join(t.TempDir(), "missing.yaml")}, "an existing YAML file"},
	} {
		code, out, errOut := run(t, "", tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errOut, tc.want)
		}
		if n := strings.Count(errOut, "\n"); n > 2 || strings.Contains(errOut, "Usage:") || out != "" {
			t.Errorf("%v: the error should be one line and a hint at most, no usage:\nstdout %q\nstderr %q", tc.args, out, errOut)
		}
	}
}

// TestFailureIsExitOne: a command that ran and failed exits 1, not 2.
func TestFailureIsExitOne(t *testing.T) {
	t.Parallel()
	code, _, errOut := run(t, "", "ctl", "status", "--store", "postgres://nobody@127.0.0.1:1/x", "--bus", "amqp://guest:guest@127.0.0.1:1/")
	if code != 1 || !strings.HasPrefix(errOut, "eventsync ctl status: ") {
		t.Fatalf("unreachable services: exit %d, stderr %q; want 1 and the command's name first", code, errOut)
	}
}

// TestErrorThenHint: the error is printed once, with the command's name,
// and the hint saying how to set the setting it names on the next line.
func TestErrorThenHint(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "", "ctl", "status", "--bus", "amqp://guest:guest@127.0.0.1:1/", "--store", "redis://127.0.0.1:1")
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if code != 1 || out != "" || len(lines) != 2 {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 1 and two lines on stderr", code, out, errOut)
	}
	if !strings.HasPrefix(lines[0], "eventsync ctl status: open the bus: connect to RabbitMQ at 127.0.0.1:1") {
		t.Errorf("first line %q: want the command and the error", lines[0])
	}
	if lines[1] != "set it with --bus, the config key bus, or EVENTSYNC_BUS" {
		t.Errorf("second line %q: want the hint for the bus setting", lines[1])
	}
}

// syncBuffer is a bytes.Buffer a test can read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRelayMetricsAddrOff: "relay --metrics-addr off" used to try to
// listen on "off" and then advise --admin, which the relay did not have.
// --admin is now the relay's flag as the worker's, "off" disables it, and
// --metrics-addr still works with a note to use --admin.
func TestRelayMetricsAddrOff(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "app.db")
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	src := "sqlite://" + dbPath
	if code, _, errOut := run(t, "", "outbox", "install", "--source", src, "--log-level", "error"); code != 0 {
		t.Fatalf("outbox install: exit %d, %s", code, errOut)
	}
	for _, flag := range []string{"--metrics-addr", "--admin"} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var stderr syncBuffer
		exit := make(chan int, 1)
		go func() {
			exit <- Run(ctx, []string{"relay", "--source", src, "--data-dir", filepath.Join(dir, "data"), flag, "off"},
				strings.NewReader(""), &bytes.Buffer{}, &stderr)
		}()
		for !strings.Contains(stderr.String(), "relaying outbox") {
			select {
			case code := <-exit:
				cancel()
				t.Fatalf("relay %s off exited %d before relaying:\n%s", flag, code, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
		if code := <-exit; code != 0 {
			t.Errorf("relay %s off: exit %d:\n%s", flag, code, stderr.String())
		}
		out := stderr.String()
		if strings.Contains(out, "admin listener") || strings.Contains(out, "admin HTTP listening") {
			t.Errorf("relay %s off still served or tried to serve /metrics:\n%s", flag, out)
		}
		if deprecated := strings.Contains(out, "eventsync relay: --metrics-addr is deprecated; use --admin\n"); deprecated != (flag == "--metrics-addr") {
			t.Errorf("relay %s off: deprecation note %v, want it only for --metrics-addr:\n%s", flag, deprecated, out)
		}
	}
}

// TestNoSilentEmbeddedDeployment: without --config, --bus/--store or a
// data directory, operational commands refuse instead of acting on a
// fresh embedded deployment in ./eventsync-data; with --data-dir (or
// EVENTSYNC_DATA_DIR) they use the embedded one, as the demo's follow-up
// commands do.
func TestNoSilentEmbeddedDeployment(t *testing.T) {
	for _, name := range []string{"EVENTSYNC_CONFIG", "EVENTSYNC_BUS", "EVENTSYNC_STORE", "EVENTSYNC_DATA_DIR"} {
		t.Setenv(name, "")
	}
	cwd := t.TempDir()
	t.Chdir(cwd)

	api := startFakeAPI(t)
	expected := expectedFile(t)
	for _, tc := range []struct {
		args []string
		what string
	}{
		{[]string{"ctl", "pause", "--stream", "live"}, "no state store given"},
		{[]string{"ctl", "status"}, "no bus given"},
		{[]string{"publish", "--stream", "live", os.DevNull}, "no bus given"},
		{[]string{"verify", "--entity", "listing", "--expected", expected, "--fakeapi", api.URL, "--repair"}, "no bus given"},
	} {
		code, out, errOut := run(t, "", tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.what) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, errOut, tc.what)
		}
		for _, flag := range []string{"--config", "--bus", "--store", "--data-dir"} {
			if !strings.Contains(errOut, flag) {
				t.Errorf("%v: the refusal does not name %s: %q", tc.args, flag, errOut)
			}
		}
		if strings.Contains(out, "paused") || strings.Contains(out, "published") {
			t.Errorf("%v: acted anyway: %q", tc.args, out)
		}
	}
	if entries, _ := os.ReadDir(cwd); len(entries) > 0 {
		t.Errorf("a refused command created %v in the working directory", entries)
	}
	if n := len(api.Records("listings")); n != 0 {
		t.Errorf("verify --repair changed the API: %d records", n)
	}

	dataDir := filepath.Join(t.TempDir(), "deployment")
	if code, out, errOut := run(t, "", "ctl", "pause", "--stream", "live", "--data-dir", dataDir, "--log-level", "error"); code != 0 || !strings.Contains(out, "stream live paused") {
		t.Fatalf("ctl pause --data-dir: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Setenv("EVENTSYNC_DATA_DIR", dataDir)
	if st := liveOf(statusOf(t, []string{"--log-level", "error"})); !st.Paused {
		t.Errorf("ctl status with EVENTSYNC_DATA_DIR does not see the pause made with --data-dir: %+v", st)
	}
}
