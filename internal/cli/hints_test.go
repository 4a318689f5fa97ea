package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/setting"
)

func TestHint(t *testing.T) {
	store := setting.Errorf("store", "connect to Redis at h:6379: refused; is it running?")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"no setting", errors.New("boom"), ""},
		{"unknown key", setting.Errorf("nope.nothing", "x"), ""},
		{"wrapped", fmt.Errorf("open store: %w", store), "set it with --store, the config key store, or EVENTSYNC_STORE"},
		{"command option", setting.Errorf("resync.table", "x"), "set it with --table"},
		{"YAML only", setting.Errorf("worker.lease_ttl", "x"), "set it with the config key worker.lease_ttl or EVENTSYNC_WORKER_LEASE_TTL"},
		{"alternatives", setting.Errorf("verify.remote", "x"), "set it with --fakeapi or the config key sink"},
		{"once per key, through joins", errors.Join(
			fmt.Errorf("a: %w", store),
			setting.Errorf("demo.rate", "y"),
			fmt.Errorf("b: %w", errors.Join(errors.New("z"), store)),
		), "set store with --store, the config key store, or EVENTSYNC_STORE; set demo.rate with --rate"},
		{"nested", &setting.Error{Key: "resync.run_id", Err: setting.Errorf("resync.restart", "x")}, "set resync.run_id with --run-id; set resync.restart with --restart"},
	} {
		if got := hint(tc.err); got != tc.want {
			t.Errorf("%s: hint = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestHintTableCoversTheCode keeps the table true: every key a library
// error names is in it, and its YAML keys and variables exist.
func TestHintTableCoversTheCode(t *testing.T) {
	env := map[string]string{}
	for _, v := range config.EnvVars() {
		env[v.Key] = v.Name
	}
	for key, h := range settings {
		if len(h.flags)+len(h.env)+len(h.yaml) == 0 {
			t.Errorf("%s: no way to set it", key)
		}
		for _, f := range h.flags {
			if !strings.HasPrefix(f, "--") {
				t.Errorf("%s: flag %q does not start with --", key, f)
			}
		}
		if h.yaml == "" || h.yaml == "sink" { // the sink section has no variable
			continue
		}
		if name, ok := env[h.yaml]; !ok || name != h.env {
			t.Errorf("%s: config key %q has variable %q, the table says %q", key, h.yaml, name, h.env)
		}
	}

	used := regexp.MustCompile(`setting\.(?:Errorf|Wrap)\(\s*"([^"]+)"|setting\.Error\{Key:\s*"([^"]+)"`)
	root := filepath.Join("..", "..")
	found := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range used.FindAllStringSubmatch(string(src), -1) {
			key := m[1] + m[2]
			found++
			if _, ok := settings[key]; !ok {
				t.Errorf("%s names setting %q, which the hint table lacks", path, key)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no setting key found in the code; is the pattern stale?")
	}
}
