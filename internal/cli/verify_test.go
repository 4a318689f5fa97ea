package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
)

// deleteRedisPrefix removes the keys the store left (fencing counters).
func deleteRedisPrefix(t *testing.T, url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Error(err)
		return
	}
	c := goredis.NewClient(opts)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup %s*: %v", prefix, err)
	}
}

func startFakeAPI(t *testing.T) *fakeapi.Running {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	return api
}

func postRecord(t *testing.T, api *fakeapi.Running, body string) {
	t.Helper()
	resp, err := http.Post(api.URL+"/v1/listings", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: HTTP %d", body, resp.StatusCode)
	}
}

// row is a count line of the text report.
func row(name string, n int) string { return fmt.Sprintf("%-10s %8d", name, n) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// expectedFile writes NDJSON expected states for keys a, b and c.
func expectedFile(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for i, key := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, `{"id":"e%d","entity":"listing","key":%q,"version":%d,"op":"upsert","data":{"title":"T-%s","price":1.50}}`+"\n", i, key, i+1, key)
	}
	path := filepath.Join(t.TempDir(), "expected.ndjson")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyCommandExitCodes(t *testing.T) {
	t.Parallel()
	api := startFakeAPI(t)
	path := expectedFile(t)
	args := []string{"verify", "--entity", "listing", "--expected", path, "--fakeapi", api.URL}
	for _, key := range []string{"a", "b", "c"} {
		postRecord(t, api, fmt.Sprintf(`{"external_id":%q,"title":"T-%s","price":1.5,"version":3}`, key, key))
	}
	code, out, errOut := runCLI(t, args...)
	if code != 0 || !strings.Contains(out, "CONVERGED: all 3 keys") || !strings.Contains(out, "fake API "+api.URL+" collection listings") {
		t.Fatalf("converged: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	postRecord(t, api, `{"external_id":"b","title":"T-b","price":1.5}`)
	postRecord(t, api, `{"external_id":"zz","title":"extra"}`)
	code, out, errOut = runCLI(t, args...)
	for _, want := range []string{"DIVERGED", row("extra", 1), row("duplicated", 1), "b  remote 2, 4", "zz  remote 5", "--repair --dry-run"} {
		if !strings.Contains(out, want) {
			t.Errorf("diverged output lacks %q", want)
		}
	}
	if code != 1 || t.Failed() {
		t.Fatalf("diverged: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}

	code, out, _ = runCLI(t, append(args, "--json", "--sample", "1")...)
	var rep struct {
		Converged bool           `json:"converged"`
		Counts    map[string]int `json:"counts"`
		Samples   struct {
			Extra []struct {
				Key       string   `json:"key"`
				RemoteIDs []string `json:"remote_ids"`
			} `json:"extra"`
		} `json:"samples"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if code != 1 || rep.Converged || rep.Counts["extra"] != 1 || rep.Counts["duplicated"] != 1 || len(rep.Samples.Extra) != 1 || rep.Samples.Extra[0].Key != "zz" {
		t.Fatalf("--json: exit %d, %+v", code, rep)
	}

	// Duplicates: a plan without --yes, nothing deleted.
	code, out, _ = runCLI(t, append(args, "--delete-duplicates")...)
	if code != 1 || !strings.Contains(out, "b: keep 2 (listed first), would delete 4") || !strings.Contains(out, "--delete-duplicates --yes") {
		t.Fatalf("--delete-duplicates plan: exit %d\n%s", code, out)
	}
	if n := len(api.Records("listings")); n != 5 {
		t.Fatalf("the plan deleted records: %d left", n)
	}
	code, out, _ = runCLI(t, append(args, "--delete-duplicates", "--yes")...)
	if code != 1 || !strings.Contains(out, "b: keep 2 (listed first), deleted 4") {
		t.Fatalf("--delete-duplicates --yes: exit %d\n%s", code, out)
	}
	if n := len(api.Records("listings")); n != 4 {
		t.Fatalf("after deleting duplicates: %d records, want 4", n)
	}
}

func TestVerifyCommandCannotCheck(t *testing.T) {
	t.Parallel()
	path := expectedFile(t)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unreachable API":   {[]string{"--entity", "listing", "--expected", path, "--fakeapi", "http://127.0.0.1:1"}, `is "eventsync fakeapi" running there?`},
		"no entity":         {[]string{"--expected", path, "--fakeapi", "http://127.0.0.1:1"}, "missing --entity"},
		"no expected side":  {[]string{"--entity", "listing", "--fakeapi", "http://127.0.0.1:1"}, "--expected FILE.ndjson"},
		"both sides":        {[]string{"--entity", "listing", "--expected", path, "--table", "t", "--key", "id", "--fakeapi", "http://x"}, "either a table"},
		"no remote":         {[]string{"--entity", "listing", "--expected", path}, "set --fakeapi URL, or --config FILE"},
		"bad fakeapi URL":   {[]string{"--entity", "listing", "--expected", path, "--fakeapi", "127.0.0.1:8081"}, "e.g. http://127.0.0.1:8081"},
		"dry run alone":     {[]string{"--entity", "listing", "--expected", path, "--fakeapi", "http://x", "--dry-run"}, "add one of them"},
		"missing file":      {[]string{"--entity", "listing", "--expected", path + ".nope", "--fakeapi", "http://x"}, "--expected"},
		"unknown flag":      {[]string{"--entity", "listing", "--bogus"}, "bogus"},
		"table without key": {[]string{"--entity", "listing", "--table", "t", "--fakeapi", "http://x"}, "--table needs --key"},
	} {
		code, out, errOut := runCLI(t, append([]string{"verify"}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, want 2 with %q\nstdout:\n%s\nstderr:\n%s", name, code, tc.want, out, errOut)
		}
	}
}

// TestVerifyCommandSQLiteAndRepairPlan compares a SQLite table and prints
// the repair plan, reading states from a real Redis store.
func TestVerifyCommandSQLiteAndRepairPlan(t *testing.T) {
	t.Parallel()
	redisURL := testenv.Redis(t)
	ctx := context.Background()
	dbPath := filepath.Join(t.TempDir(), "app.db")
	src, err := sqlite.Open(ctx, sqlite.Config{Path: dbPath, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE listings (id TEXT PRIMARY KEY, title TEXT, secret TEXT)`,
		`INSERT INTO listings VALUES ('a', 'T-a', 's1'), ('b', 'T-b', 's2')`,
	} {
		if _, err := src.DB().ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// verify below excludes secret like the trigger (a different list is refused).
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	_ = src.Close()
	api := startFakeAPI(t)
	postRecord(t, api, `{"external_id":"a","title":"T-a"}`)
	postRecord(t, api, `{"external_id":"ghost","title":"boo"}`)

	namespace := testenv.UniqueName("verifycli")
	t.Cleanup(func() { deleteRedisPrefix(t, redisURL, namespace) })
	args := []string{"verify", "--entity", "listing", "--source", "sqlite://" + dbPath, "--table", "listings", "--key", "id",
		"--exclude-columns", "secret", "--fakeapi", api.URL, "--store", redisURL, "--namespace", namespace}
	code, out, errOut := runCLI(t, append(args, "--repair", "--dry-run")...)
	for _, want := range []string{
		row("missing", 1),
		"would publish upsert version 2 for b (missing) after flagging it for repair",
		"would publish delete version 1 for ghost (extra)",
		"repair: would publish 1 upserts and 1 deletes to live",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if code != 1 || t.Failed() {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if n := len(api.Records("listings")); n != 2 {
		t.Fatalf("a dry run changed the API: %d records", n)
	}

	// The check left its report in the store's control space, for the console.
	client, err := eventsync.Open(eventsync.Config{Store: redisURL, Namespace: namespace}, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	st, err := client.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reports, err := verify.LastReports(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 {
		t.Fatalf("recorded reports: %+v, want one for listing", reports)
	}
	r := reports[0]
	if r.Entity != "listing" || r.Converged || r.Counts.Matching != 1 || r.Counts.Missing != 1 || r.Counts.Extra != 1 ||
		len(r.Samples.Missing) != 1 || r.Samples.Missing[0].Key != "b" || len(r.Samples.Extra) != 1 || r.Samples.Extra[0].Key != "ghost" ||
		r.By == "" || r.Host == "" || r.At.IsZero() || !strings.Contains(r.Target, api.URL) {
		t.Errorf("recorded report: %+v", r)
	}
}
