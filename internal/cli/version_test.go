package cli

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildInfoString(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		b    buildInfo
		want string
	}{
		{buildInfo{Version: "v1.2.3", Commit: "abc123", Date: "2026-01-02T03:04:05Z"}, "v1.2.3 (commit abc123, built 2026-01-02T03:04:05Z)"},
		{buildInfo{Version: "dev", Commit: "abc123", Date: "2026-01-02T03:04:05Z", dateIsCommit: true, modified: true}, "dev (commit abc123 with local changes, committed 2026-01-02T03:04:05Z)"},
		{buildInfo{Version: "dev"}, "dev (commit unknown, build date unknown)"},
	} {
		if got := tc.b.String(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.b, got, tc.want)
		}
	}
}

// TestVersionStampedByLdflags builds the binary the way a release does
// (scripts/image.sh, the Dockerfile) and checks that "eventsync version"
// prints what the linker stamped: a renamed variable would silently fall
// back to the VCS stamp.
func TestVersionStampedByLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "eventsync")
	const pkg = "github.com/eventsync/eventsync/internal/cli"
	ldflags := "-X " + pkg + ".Version=v9.8.7 -X " + pkg + ".Commit=0123456789abcdef -X " + pkg + ".Date=2026-02-03T04:05:06Z"
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "../../cmd/eventsync")
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("eventsync version: %v", err)
	}
	if got, want := strings.TrimSpace(string(out)), "eventsync v9.8.7 (commit 0123456789abcdef, built 2026-02-03T04:05:06Z)"; got != want {
		t.Errorf("eventsync version printed %q, want %q", got, want)
	}
}
