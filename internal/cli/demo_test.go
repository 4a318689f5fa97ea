package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoCommandConverges runs `eventsync demo` small, end to end, through
// the command line: exit code 0, and the report names the verdict, the data
// dir and the commands to run next.
func TestDemoCommandConverges(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "demo")
	var stdout, stderr bytes.Buffer
	code := Run(ctx, []string{"demo", "--entities", "150", "--duration", "2s", "--rate", "40", "--workers", "2", "--concurrency", "16", "--seed", "3", "--data-dir", dir},
		strings.NewReader(""), &stdout, &stderr)
	out := stdout.String()
	if code != 0 {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr.String())
	}
	for _, want := range []string{"initial sync", "CONVERGED", "missing 0 · extra 0 · differing 0 · duplicated 0", "overlapping writes 0 · duplicate records 0", dir, "eventsync ctl status --data-dir " + dir} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Errorf("progress redrawn with \\r although stdout is not a terminal")
	}
}

// TestDemoCommandRejectsBadFlags checks that every bad value is refused
// before anything starts, with a message naming the flag and the fix.
func TestDemoCommandRejectsBadFlags(t *testing.T) {
	t.Parallel()
	notDemo := t.TempDir()
	if err := os.WriteFile(filepath.Join(notDemo, "precious.txt"), []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--faults", "medium"}, "use none, realistic or heavy"},
		{[]string{"--entities", "0"}, "--entities 0: must be at least 1"},
		{[]string{"--workers", "-1"}, "--workers -1: must be at least 1"},
		{[]string{"--concurrency", "0"}, "--concurrency 0"},
		{[]string{"--duration", "0s"}, "--duration 0s: must be positive"},
		{[]string{"--duration", "500ms"}, "use at least 1s"},
		{[]string{"--rate", "0"}, "--rate 0"},
		{[]string{"--data-dir", notDemo, "--entities", "10", "--duration", "1s"}, "was not made by \"eventsync demo\"; refusing to clear it"},
		{[]string{"stray"}, "unexpected argument"},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), append([]string{"demo", "--quiet"}, tc.args...), strings.NewReader(""), &stdout, &stderr)
		if code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("demo %v: exit %d, stderr %q; want a failure mentioning %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(notDemo, "precious.txt")); err != nil || string(b) != "keep me" {
		t.Errorf("the demo touched a directory it did not make: %q, %v", b, err)
	}
}
