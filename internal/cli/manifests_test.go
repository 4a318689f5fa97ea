package cli

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/config"
)

// Helpers shared by the tests of the deployment files (compose.yaml,
// deploy/kubernetes): they check what those files say against the code.

// repoFile is a path relative to the repository root.
func repoFile(rel string) string { return filepath.Join("..", "..", filepath.FromSlash(rel)) }

// checkCommandLine reports whether args (what follows "eventsync") name a
// real subcommand with flags it has, positional arguments it takes, and
// its required flags; it runs nothing.
func checkCommandLine(args []string) error {
	started := false
	root := newRoot(Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard}, &started)
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if cmd == root || cmd.RunE == nil || len(rest) > 0 && cmd.HasSubCommands() && !strings.HasPrefix(rest[0], "-") {
		return usagef("%q is not a command that runs something", strings.Join(args, " "))
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return err
	}
	return checkRequired(cmd)
}

// knownEnv reports whether name is an environment variable eventsync
// reads: EVENTSYNC_CONFIG or an override of a config key (also with the
// _FILE suffix of a mounted secret), and documented in
// docs/configuration.md.
func knownEnv(t *testing.T, name string) bool {
	t.Helper()
	base := strings.TrimSuffix(name, "_FILE")
	if base == "EVENTSYNC_CONFIG" {
		return true
	}
	found := false
	for _, v := range config.EnvVars() {
		if v.Name == base {
			found = true
		}
	}
	return found && strings.Contains(configDoc(), "`"+base+"`")
}

var configDoc = sync.OnceValue(func() string {
	b, err := os.ReadFile(repoFile("docs/configuration.md"))
	if err != nil {
		panic(err)
	}
	return string(b)
})

// sinkEnvRefs returns the ${NAME} references of a config file's sink
// headers: the variables (or NAME_FILE) a worker must be given.
func sinkEnvRefs(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(string(b), -1) {
		refs[m[1]] = true
	}
	return refs
}

// serveAdmin serves the admin endpoints as a worker does (no checks, so
// /readyz answers 200) until the test ends and returns the base URL.
func serveAdmin(t *testing.T) string {
	t.Helper()
	srv, err := startAdmin("127.0.0.1:0", newRegistry(), nil, nil, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return "http://" + srv.Addr()
}

// serveFakeAPI serves the fake API with its defaults until the test ends.
func serveFakeAPI(t *testing.T) string {
	t.Helper()
	srv, err := fakeapi.Start(t.Context(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { <-srv.Done() })
	return srv.URL
}

// answersOK reports whether GET base+path answers 200.
func answersOK(t *testing.T, base, path string) bool {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", base, path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
