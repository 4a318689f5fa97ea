package verify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/source"
)

func sources() []struct {
	name string
	open func(*testing.T) *app
} {
	return []struct {
		name string
		open func(*testing.T) *app
	}{{"postgres", newPostgresApp}, {"sqlite", newSQLiteApp}}
}

func TestConverged(t *testing.T) {
	t.Parallel()
	for _, s := range sources() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			a := s.open(t)
			a.insert(t, 12)
			a.syncAll(t)
			for _, remote := range []struct {
				name string
				set  func(*verify.Config)
			}{
				{"http-sink-list", func(*verify.Config) {}},
				{"fakeapi-dump", func(c *verify.Config) { c.Remote = verify.FakeAPIDump{BaseURL: a.api.URL} }},
			} {
				cfg := a.config()
				remote.set(&cfg)
				rep := check(t, cfg).Report
				if !rep.Converged {
					var b strings.Builder
					_ = verify.WriteText(&b, rep)
					t.Fatalf("%s: not converged:\n%s", remote.name, b.String())
				}
				want := verify.Counts{Expected: 12, Remote: 12, Matching: 12}
				if rep.Counts != want {
					t.Errorf("%s: counts %+v, want %+v", remote.name, rep.Counts, want)
				}
			}
		})
	}
}

func TestEmptyIsConverged(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	rep := check(t, a.config()).Report
	if !rep.Converged || rep.Counts != (verify.Counts{}) {
		t.Fatalf("empty table and API: converged=%v counts %+v", rep.Converged, rep.Counts)
	}
}

// drift changes the API behind eventsync's back in every way verify must
// detect, starting from a converged state of keys k-001..k-012.
func drift(t *testing.T, a *app) {
	t.Helper()
	// missing: removed remotely.
	call(t, a.api, "DELETE", "/v1/listings/"+remoteID(t, a.api, "k-004"), "")
	// differing: a field changed, a field removed.
	call(t, a.api, "PUT", "/v1/listings/"+remoteID(t, a.api, "k-002"),
		`{"external_id":"k-002","title":"Listing 2","price":12.5,"tags":`+a.tags(false)+`,"version":1}`)
	call(t, a.api, "PUT", "/v1/listings/"+remoteID(t, a.api, "k-007"),
		`{"external_id":"k-007","price":17.50,"tags":`+a.tags(true)+`}`)
	// extra: never in the source.
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"z-ghost","title":"Ghost"}`)
	// duplicated: a second, equal record for k-009.
	call(t, a.api, "POST", "/v1/listings", `{"tags":`+a.tags(true)+`,"external_id":"k-009","title":"Listing 9","price":19.5}`)
	// unkeyed.
	call(t, a.api, "POST", "/v1/listings", `{"title":"no key"}`)
}

func TestDivergences(t *testing.T) {
	t.Parallel()
	for _, s := range sources() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			a := s.open(t)
			a.insert(t, 12)
			a.syncAll(t)
			drift(t, a)
			// missing at the source: a row that was never synced.
			a.exec(t, `INSERT INTO listings (id, title, price, tags) VALUES ('k-100', 'New', 1, '{}')`)

			res := check(t, a.config())
			rep := res.Report
			want := verify.Counts{Expected: 13, Remote: 14, Matching: 8, Missing: 2, Extra: 1, Differing: 2, Duplicated: 1, Unkeyed: 1}
			if rep.Converged || rep.Counts != want {
				t.Fatalf("converged=%v counts %+v, want %+v", rep.Converged, rep.Counts, want)
			}
			keys := func(ss []verify.Sample) []string {
				var out []string
				for _, s := range ss {
					out = append(out, s.Key)
				}
				return out
			}
			if got := keys(rep.Samples.Missing); !slices.Equal(got, []string{"k-004", "k-100"}) {
				t.Errorf("missing samples %v", got)
			}
			if got := keys(rep.Samples.Extra); !slices.Equal(got, []string{"z-ghost"}) || len(rep.Samples.Extra[0].RemoteIDs) != 1 {
				t.Errorf("extra samples %+v", rep.Samples.Extra)
			}
			if got := keys(rep.Samples.Duplicated); !slices.Equal(got, []string{"k-009"}) || len(rep.Samples.Duplicated[0].RemoteIDs) != 2 {
				t.Errorf("duplicated samples %+v", rep.Samples.Duplicated)
			}
			if len(rep.Samples.Unkeyed) != 1 {
				t.Errorf("unkeyed samples %+v", rep.Samples.Unkeyed)
			}
			diff := rep.Samples.Differing
			if len(diff) != 2 {
				t.Fatalf("differing samples %+v", diff)
			}
			// k-002: price 12.5 equals the source's 12.50 exactly; the
			// nested tags.sea differs.
			if d := diff[0]; d.Key != "k-002" || d.Field != "tags" || !strings.Contains(d.Remote, "false") || !strings.Contains(d.Expected, "true") {
				t.Errorf("k-002 sample %+v, want field tags with sea true → false", d)
			}
			if d := diff[1]; d.Key != "k-007" || d.Field != "title" || d.Remote != "absent" || d.Expected != `"Listing 7"` {
				t.Errorf("k-007 sample %+v, want title absent", d)
			}
			var b strings.Builder
			if err := verify.WriteText(&b, rep); err != nil {
				t.Fatal(err)
			}
			for _, line := range []string{"DIVERGED", "missing           2", `k-007  remote`, `field "title": expected "Listing 7", remote absent`, "z-ghost  remote"} {
				if !strings.Contains(b.String(), line) {
					t.Errorf("text report lacks %q:\n%s", line, b.String())
				}
			}
		})
	}
}

func TestSamplesAreTheFirstKeys(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	a.insert(t, 30)
	cfg := a.config()
	cfg.Samples = 3
	rep := check(t, cfg).Report
	if rep.Counts.Missing != 30 {
		t.Fatalf("missing %d, want 30", rep.Counts.Missing)
	}
	var got []string
	for _, s := range rep.Samples.Missing {
		got = append(got, s.Key)
	}
	if !slices.Equal(got, []string{"k-001", "k-002", "k-003"}) {
		t.Fatalf("samples %v, want the 3 smallest keys", got)
	}
}

func TestIgnoreFields(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	a.insert(t, 3)
	a.syncAll(t)
	call(t, a.api, "PUT", "/v1/listings/"+remoteID(t, a.api, "k-001"), `{"external_id":"k-001","title":"changed","price":11.5,"tags":`+a.tags(true)+`}`)
	if rep := check(t, a.config()).Report; rep.Counts.Differing != 1 {
		t.Fatalf("differing %d, want 1", rep.Counts.Differing)
	}
	cfg := a.config()
	cfg.IgnoreFields = append(slices.Clone(verify.DefaultIgnoreFields), "title")
	if rep := check(t, cfg).Report; !rep.Converged {
		t.Fatalf("title ignored: still diverged: %+v", rep.Counts)
	}
	// Without the default ignore list the source's "id" column is compared
	// with the API's own id and every record differs.
	cfg.IgnoreFields = []string{}
	if rep := check(t, cfg).Report; rep.Counts.Differing != 3 {
		t.Fatalf("nothing ignored: differing %d, want 3", rep.Counts.Differing)
	}
}

func writeFile(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "expected.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func ev(key string, version int, op, data string) string {
	if op == "delete" {
		return fmt.Sprintf(`{"id":"e%d","entity":"listing","key":%q,"version":%d,"op":"delete"}`, version, key, version)
	}
	return fmt.Sprintf(`{"id":"e%d","entity":"listing","key":%q,"version":%d,"op":"upsert","data":%s}`, version, key, version, data)
}

func TestNDJSONExpected(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t) // only for the fake API
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"a","title":"new","n":100}`)
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"b","title":"B"}`)
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"gone","title":"G"}`)
	path := writeFile(t,
		ev("a", 2, "upsert", `{"title":"new","n":1e2}`),
		ev("a", 1, "upsert", `{"title":"old","n":1}`), // lower version loses, whatever the order
		"",
		`{"id":"x","entity":"host","key":"h","version":1,"op":"upsert","data":{}}`, // other entity: skipped
		ev("b", 1, "upsert", `{"title":"B"}`),
		ev("gone", 3, "upsert", `{"title":"G"}`),
		ev("gone", 4, "delete", ""),
		ev("never", 5, "delete", ""),
	)
	cfg := verify.Config{Entity: "listing", Expected: verify.NDJSONFile{Path: path, Entity: "listing"}, Remote: verify.FakeAPIDump{BaseURL: a.api.URL}}
	rep := check(t, cfg).Report
	want := verify.Counts{Expected: 2, ExpectedAbsent: 2, Remote: 3, Matching: 2, Extra: 1}
	if rep.Counts != want {
		t.Fatalf("counts %+v, want %+v", rep.Counts, want)
	}
	if len(rep.Samples.Extra) != 1 || rep.Samples.Extra[0].Key != "gone" || rep.Samples.Extra[0].Version != 4 {
		t.Fatalf("extra samples %+v", rep.Samples.Extra)
	}
}

func TestNDJSONErrors(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	for name, tc := range map[string]struct {
		lines []string
		want  string
	}{
		"bad line":         {[]string{ev("a", 1, "upsert", `{}`), `{"entity":"listing"}`}, "line 2: invalid event"},
		"not json":         {[]string{"", "", "nope"}, "line 3"},
		"conflicting data": {[]string{ev("a", 1, "upsert", `{"x":1}`), ev("a", 1, "upsert", `{"x":2}`)}, `key "a": two different states with version 1`},
	} {
		cfg := verify.Config{Entity: "listing", Expected: verify.NDJSONFile{Path: writeFile(t, tc.lines...), Entity: "listing"}, Remote: verify.FakeAPIDump{BaseURL: a.api.URL}}
		_, err := verify.Check(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", name, err, tc.want)
		}
	}
	cfg := verify.Config{Entity: "listing", Expected: verify.NDJSONFile{Path: filepath.Join(t.TempDir(), "missing.ndjson"), Entity: "listing"}, Remote: verify.FakeAPIDump{BaseURL: a.api.URL}}
	if _, err := verify.Check(context.Background(), cfg); err == nil || setting.Key(err) != "verify.expected" {
		t.Errorf("missing file: %v, want an error about the expected side's setting", err)
	}
}

// unread is an expected side the check must not reach.
type unread struct{ t *testing.T }

func (u unread) Each(context.Context, func(verify.Item) error) error {
	u.t.Error("the expected side was read")
	return nil
}

func (unread) String() string { return "unread" }

// A mistyped entity fails the configuration check before anything is read
// (no DIVERGED report), naming the sink configuration's entities, which
// come from the remote sink unless given; a mistyped table names the table
// setting and the closest table.
func TestMistypedEntityAndTable(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	cfg := a.config()
	cfg.Entity, cfg.Expected = "lsting", unread{t}
	res, err := verify.Check(context.Background(), cfg)
	want := "entity lsting is not in the sink configuration (known: listing); did you mean listing?"
	if res != nil || err == nil || !strings.Contains(err.Error(), want) || setting.Key(err) != "verify.entity" {
		t.Errorf("entity from the sink's entities: %v, %v; want %q about verify.entity", res, err, want)
	}
	cfg.Remote, cfg.SinkEntities = verify.FakeAPIDump{BaseURL: a.api.URL}, []string{"listing", "host"}
	if _, err := verify.Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "(known: host, listing)") {
		t.Errorf("entity from SinkEntities: %v", err)
	}

	cfg = a.config()
	cfg.Expected = verify.Table{Source: a.src, Spec: source.SnapshotSpec{Table: "listngs", Entity: "listing", KeyColumn: "id"}}
	_, err = verify.Check(context.Background(), cfg)
	if !errors.Is(err, source.ErrTableNotFound) || !strings.Contains(err.Error(), "did you mean listings?") || setting.Key(err) != "verify.table" {
		t.Errorf("mistyped table: %v, want the closest table and the table setting", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	path := writeFile(t, ev("a", 1, "upsert", `{}`))
	cfg := verify.Config{Entity: "listing", Expected: verify.NDJSONFile{Path: path, Entity: "listing"}, Remote: verify.FakeAPIDump{BaseURL: "http://127.0.0.1:1"}}
	if _, err := verify.Check(context.Background(), cfg); err == nil || setting.Key(err) != "verify.fakeapi" {
		t.Errorf("unreachable fake API: %v, want an error about the fake API setting", err)
	}
	// A plain HTTP server that is not a fake API.
	cfg.Remote = verify.FakeAPIDump{BaseURL: a.api.URL + "/v1/nothing"}
	if _, err := verify.Check(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("wrong URL: %v", err)
	}
}

func TestJSONReport(t *testing.T) {
	t.Parallel()
	a := newSQLiteApp(t)
	a.insert(t, 2)
	b, err := json.Marshal(check(t, a.config()).Report)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Converged bool `json:"converged"`
		Counts    struct {
			Missing int `json:"missing"`
		} `json:"counts"`
		Samples struct {
			Missing []struct {
				Key     string `json:"key"`
				Version int64  `json:"version"`
			} `json:"missing"`
			Extra []any `json:"extra"`
		} `json:"samples"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Converged || back.Counts.Missing != 2 || len(back.Samples.Missing) != 2 || back.Samples.Missing[0].Key != "k-001" || back.Samples.Missing[0].Version < 1 || back.Samples.Extra == nil {
		t.Fatalf("JSON report %s", b)
	}
}
