package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store"
	storepg "github.com/eventsync/eventsync/store/postgres"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// app is an application table captured by the outbox, with the fake API
// and the HTTP sink the workers use.
type app struct {
	src   source.Source
	exec  func(t *testing.T, sql string, args ...any)
	spec  source.SnapshotSpec
	api   *fakeapi.Running
	sink  *httpsink.Sink
	store store.Store
	// tagsAsText: SQLite stores the tags document as text, so the events
	// carry it as a JSON string; PostgreSQL's JSONB becomes an object.
	tagsAsText bool
}

// tags is the JSON value of the tags column as the source's events carry it.
func (a *app) tags(sea bool) string {
	doc := fmt.Sprintf(`{"sea": %v, "rooms": [1, 2]}`, sea)
	if a.tagsAsText {
		b, _ := json.Marshal(doc)
		return string(b)
	}
	return doc
}

const listingsDDL = `CREATE TABLE listings (id %s PRIMARY KEY, title TEXT NOT NULL, price NUMERIC, tags %s)`

// newPostgresApp creates a schema of its own holding the listings table and
// the outbox, and drops it when the test ends.
func newPostgresApp(t *testing.T) *app {
	t.Helper()
	base := testenv.Postgres(t)
	schema := testenv.UniqueName("verify")
	ctx := context.Background()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	dsn := u.String()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		_ = conn.Close(context.Background())
	})
	src, err := postgres.Open(ctx, postgres.Config{DSN: dsn, MaxConns: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	a := &app{src: src}
	a.exec = func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, pgPlaceholders(sql), args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	a.exec(t, fmt.Sprintf(listingsDDL, "TEXT", "JSONB"))
	a.install(t, "listings")
	return a
}

// pgPlaceholders turns ? into $1, $2, ... so one SQL text serves both
// databases.
func pgPlaceholders(sql string) string {
	var b strings.Builder
	n := 0
	for _, r := range sql {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func newSQLiteApp(t *testing.T) *app {
	t.Helper()
	src, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	a := &app{src: src, tagsAsText: true}
	a.exec = func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := src.DB().ExecContext(context.Background(), sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	a.exec(t, fmt.Sprintf(listingsDDL, "TEXT", "TEXT"))
	a.install(t, "listings")
	return a
}

func (a *app) install(t *testing.T, table string) {
	t.Helper()
	ctx := context.Background()
	if err := a.src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.src.InstallTrigger(ctx, source.TriggerSpec{Table: table, Entity: "listing", KeyColumn: "id"}); err != nil {
		t.Fatal(err)
	}
	a.spec = source.SnapshotSpec{Table: table, Entity: "listing", KeyColumn: "id", PageSize: 7}
	api, err := fakeapi.Start(ctx, fakeapi.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	a.api = api
	cfg, err := httpsink.ParseConfig([]byte("defaults:\n  base_url: " + api.URL + "\n  timeout: 5s\nentities:\n  listing:\n    collection: listings\n    list: {path: \"/v1/listings?page={{.Page}}&per_page={{.PerPage}}\", per_page: 5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := httpsink.New(cfg, httpsink.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.Close)
	a.sink = sk
}

// insert adds n listings k-001... with a price of the form 12.50.
func (a *app) insert(t *testing.T, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		a.exec(t, `INSERT INTO listings (id, title, price, tags) VALUES (?, ?, ?, ?)`,
			fmt.Sprintf("k-%03d", i), fmt.Sprintf("Listing %d", i), fmt.Sprintf("%d.50", 10+i), `{"sea": true, "rooms": [1, 2]}`)
	}
}

// openStore returns a PostgreSQL state store in a schema of its own.
func openStore(t *testing.T) store.Store {
	t.Helper()
	schema := testenv.UniqueName("verify_state")
	st, err := storepg.Open(context.Background(), storepg.Config{DSN: testenv.Postgres(t), Schema: schema, MaxConns: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = st.Pool().Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		_ = st.Close()
	})
	return st
}

// applier is the real apply algorithm over the app's store and sink.
func (a *app) applier(t *testing.T) *engine.Applier {
	t.Helper()
	if a.store == nil {
		a.store = openStore(t)
	}
	ap, err := engine.NewApplier(a.store, a.sink, engine.Config{WorkerID: "verify-test", LeaseTTL: 5 * time.Second, Entities: []string{"listing"}, MaxAttempts: 3, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// syncAll applies a snapshot of the table through the real apply
// algorithm, as a resync would: afterwards the API has converged.
func (a *app) syncAll(t *testing.T) {
	t.Helper()
	ap := a.applier(t)
	ctx := context.Background()
	err := a.src.Snapshot(ctx, a.spec, func(page []event.Event, _ string) error {
		for _, ev := range page {
			body, err := ev.Marshal()
			if err != nil {
				return err
			}
			if out := ap.Apply(ctx, body, 1); out.Result != engine.ResultApplied {
				return fmt.Errorf("apply %s: %s %s", ev.Key, out.Result, out.Reason)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (a *app) config() verify.Config {
	return verify.Config{
		Entity:     "listing",
		Expected:   verify.Table{Source: a.src, Spec: a.spec},
		Remote:     a.sink,
		RemoteName: "fake API " + a.api.URL,
	}
}

func check(t *testing.T, cfg verify.Config) *verify.Result {
	t.Helper()
	res, err := verify.Check(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// remoteID returns the id of the only remote record of key.
func remoteID(t *testing.T, api *fakeapi.Running, key string) string {
	t.Helper()
	var ids []string
	for _, r := range api.Records("listings") {
		if r.ExternalID() == key {
			ids = append(ids, r.ID())
		}
	}
	if len(ids) != 1 {
		t.Fatalf("key %s has remote records %v, want exactly one", key, ids)
	}
	return ids[0]
}

// call sends a request straight to the fake API, as drift from outside
// eventsync would.
func call(t *testing.T, api *fakeapi.Running, method, path, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, api.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: HTTP %d %s", method, path, resp.StatusCode, out)
	}
	return string(bytes.TrimSpace(out))
}
