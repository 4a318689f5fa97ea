// Package sourcetest is the conformance suite every source.Source adapter
// passes. Adapters call Run from their tests with a function that returns a
// fresh, isolated source (own schema or own database file) and a
// database/sql handle on the same database for the application's writes.
package sourcetest

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/source"
)

// Env is one isolated source and the application's handle on its database.
// The suite writes portable SQL with $1-style placeholders.
type Env struct {
	Source source.Source
	DB     *sql.DB
}

// Features declares honest differences between databases.
type Features struct {
	// ConcurrentWriters is true when two write transactions can be open at
	// once (PostgreSQL), so a transaction can commit after a later one.
	ConcurrentWriters bool
	// OddRows are statements, in the database's own SQL, that write outbox
	// rows an application may write but no Row field holds as stored.
	OddRows []OddRow
}

// OddRow is one outbox row written by Insert and the column Claim must
// report in Row.Faults for it; Fault empty means the row must come back
// without faults (a value the relay, not the adapter, judges).
type OddRow struct {
	Insert string
	Fault  string
}

// Run runs the suite. newEnv must register its own cleanup.
func Run(t *testing.T, newEnv func(t *testing.T) Env, f Features) {
	tests := []struct {
		name string
		fn   func(t *testing.T, env Env)
	}{
		{"InstallIdempotentAndConcurrent", testInstall},
		{"NotInstalled", testNotInstalled},
		{"TriggerEmitsVersionedEvents", testTrigger},
		{"TriggerIncludeColumns", testIncludeColumns},
		{"TriggerRejectsUnknownColumns", testUnknownColumns},
		{"MissingTableSuggestsClosest", testMissingTable},
		{"RemoveTriggerKeepsVersions", testRemoveTrigger},
		{"ClaimReleaseMarkSent", testClaim},
		{"ConcurrentClaimersDisjoint", testConcurrentClaimers},
		{"SnapshotConsistentAndVersioned", testSnapshot},
		{"SnapshotKeysetResume", testSnapshotResume},
		{"SnapshotFiltersLikeTheTrigger", testSnapshotFiltersLikeTheTrigger},
		{"Cleanup", testCleanup},
		{"WaitWakesOnNewRows", testWait},
		{"OddRowsAreClaimedNotFailed", func(t *testing.T, env Env) { testOddRows(t, env, f.OddRows) }},
	}
	if f.ConcurrentWriters {
		tests = append(tests, struct {
			name string
			fn   func(t *testing.T, env Env)
		}{"LateCommitIsNotSkipped", testLateCommit})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newEnv(t))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("exec %q: %v", q, err)
	}
}

// setup installs the outbox and a listings table captured with the secret
// column excluded.
func setup(t *testing.T, env Env) {
	t.Helper()
	ctx := ctxT(t)
	if err := env.Source.Install(ctx); err != nil {
		t.Fatalf("Install: %v", err)
	}
	exec(t, env.DB, `CREATE TABLE listings (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER, secret TEXT)`)
	if err := env.Source.InstallTrigger(ctx, source.TriggerSpec{
		Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"},
	}); err != nil {
		t.Fatalf("InstallTrigger: %v", err)
	}
}

func claimAll(t *testing.T, src source.Source) []source.Row {
	t.Helper()
	ctx := ctxT(t)
	var all []source.Row
	for {
		b, err := src.Claim(ctx, 100)
		if err != nil {
			t.Fatalf("Claim: %v", err)
		}
		rows := b.Rows()
		if err := b.MarkSent(ctx); err != nil {
			t.Fatalf("MarkSent: %v", err)
		}
		if len(rows) == 0 {
			return all
		}
		all = append(all, rows...)
	}
}

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("data %q is not a JSON object: %v", data, err)
	}
	return m
}

func testInstall(t *testing.T, env Env) {
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- env.Source.Install(ctx) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Install: %v", err)
		}
	}
	if err := env.Source.Install(ctx); err != nil {
		t.Fatalf("repeated Install: %v", err)
	}
	if got := claimAll(t, env.Source); len(got) != 0 {
		t.Fatalf("fresh outbox has %d rows", len(got))
	}
}

func testNotInstalled(t *testing.T, env Env) {
	ctx := ctxT(t)
	exec(t, env.DB, `CREATE TABLE listings (id INTEGER PRIMARY KEY, name TEXT)`)
	err := env.Source.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id"})
	if !errors.Is(err, source.ErrNotInstalled) {
		t.Fatalf("InstallTrigger before Install: got %v, want ErrNotInstalled", err)
	}
	if _, err := env.Source.Claim(ctx, 10); !errors.Is(err, source.ErrNotInstalled) {
		t.Fatalf("Claim before Install: got %v, want ErrNotInstalled", err)
	}
}

func testTrigger(t *testing.T, env Env) {
	ctx := ctxT(t)
	if err := env.Source.Install(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `CREATE TABLE listings (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER, secret TEXT)`)
	// A row that exists before the trigger gets a version too.
	exec(t, env.DB, `INSERT INTO listings (id, name, price, secret) VALUES (1, 'old', 10, 'pw0')`)
	spec := source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}
	if err := env.Source.InstallTrigger(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// Installing again is idempotent and must not duplicate events.
	if err := env.Source.InstallTrigger(ctx, spec); err != nil {
		t.Fatalf("second InstallTrigger: %v", err)
	}
	exec(t, env.DB, `INSERT INTO listings (id, name, price, secret) VALUES ($1, $2, $3, $4)`, 2, "a", 100, "pw")
	exec(t, env.DB, `UPDATE listings SET price = 120 WHERE id = 2`)
	exec(t, env.DB, `UPDATE listings SET secret = 'pw2' WHERE id = 2`) // excluded only: no event
	exec(t, env.DB, `UPDATE listings SET name = 'renamed' WHERE id = 1`)
	exec(t, env.DB, `UPDATE listings SET id = 3 WHERE id = 1`) // key change: delete 1, upsert 3
	exec(t, env.DB, `DELETE FROM listings WHERE id = 2`)

	rows := claimAll(t, env.Source)
	type want struct {
		key  string
		op   event.Op
		data map[string]any
	}
	wants := []want{
		{"2", event.OpUpsert, map[string]any{"id": 2.0, "name": "a", "price": 100.0}},
		{"2", event.OpUpsert, map[string]any{"id": 2.0, "name": "a", "price": 120.0}},
		{"1", event.OpUpsert, map[string]any{"id": 1.0, "name": "renamed", "price": 10.0}},
		{"1", event.OpDelete, nil},
		{"3", event.OpUpsert, map[string]any{"id": 3.0, "name": "renamed", "price": 10.0}},
		{"2", event.OpDelete, nil},
	}
	if len(rows) != len(wants) {
		for _, r := range rows {
			t.Logf("row %d %s %s v%d %s", r.ID, r.Key, r.Op, r.Version, r.Data)
		}
		t.Fatalf("got %d outbox rows, want %d", len(rows), len(wants))
	}
	last := map[string]int64{}
	for i, r := range rows {
		w := wants[i]
		if r.Entity != "listing" || r.Key != w.key || r.Op != w.op {
			t.Errorf("row %d: got %s/%s %s, want listing/%s %s", i, r.Entity, r.Key, r.Op, w.key, w.op)
		}
		if r.Version <= last[r.Key] {
			t.Errorf("row %d: version %d of key %s not above its previous %d", i, r.Version, r.Key, last[r.Key])
		}
		last[r.Key] = r.Version
		if w.data == nil {
			if len(r.Data) != 0 && string(r.Data) != "null" {
				t.Errorf("row %d: delete carries data %s", i, r.Data)
			}
		} else if got := decode(t, r.Data); !maps.Equal(got, w.data) {
			t.Errorf("row %d: data %v, want %v (secret and eventsync_version must never appear)", i, got, w.data)
		}
		ev := r.Event()
		if ev.ID != fmt.Sprintf("outbox-%d", r.ID) {
			t.Errorf("row %d: event id %q", i, ev.ID)
		}
		if err := ev.Validate(); err != nil {
			t.Errorf("row %d: event invalid: %v", i, err)
		}
		if r.Occurred.IsZero() || r.CreatedAt.IsZero() {
			t.Errorf("row %d: occurred_at/created_at not set", i)
		}
	}
	// The snapshot's version of key 3 is the one its last event carried.
	var snap []event.Event
	if err := env.Source.Snapshot(ctx, source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}},
		func(page []event.Event, _ string) error { snap = append(snap, page...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(snap) != 1 || snap[0].Key != "3" || snap[0].Version != rows[4].Version {
		t.Fatalf("snapshot %+v, want key 3 at version %d", snap, rows[4].Version)
	}
}

func testIncludeColumns(t *testing.T, env Env) {
	ctx := ctxT(t)
	if err := env.Source.Install(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `CREATE TABLE hosts (code TEXT PRIMARY KEY, name TEXT, email TEXT, password TEXT)`)
	if err := env.Source.InstallTrigger(ctx, source.TriggerSpec{Table: "hosts", Entity: "host", KeyColumn: "code", Columns: []string{"name", "email"}}); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `INSERT INTO hosts (code, name, email, password) VALUES ('h-1', 'Ann', 'ann@example.com', 'x')`)
	rows := claimAll(t, env.Source)
	if len(rows) != 1 {
		t.Fatalf("got %d rows, want 1", len(rows))
	}
	want := map[string]any{"name": "Ann", "email": "ann@example.com"}
	if got := decode(t, rows[0].Data); !maps.Equal(got, want) || rows[0].Key != "h-1" {
		t.Fatalf("key %q data %v, want h-1 %v", rows[0].Key, got, want)
	}
}

func testUnknownColumns(t *testing.T, env Env) {
	ctx := ctxT(t)
	if err := env.Source.Install(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `CREATE TABLE listings (id INTEGER PRIMARY KEY, secret TEXT)`)
	for _, spec := range []source.TriggerSpec{
		{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secrett"}},
		{Table: "listings", Entity: "listing", KeyColumn: "nope"},
		{Table: "missing", Entity: "listing", KeyColumn: "id"},
		{Table: "listings", Entity: "Listing", KeyColumn: "id"},
		{Table: "listings; DROP TABLE x", Entity: "listing", KeyColumn: "id"},
	} {
		if err := env.Source.InstallTrigger(ctx, spec); err == nil {
			t.Errorf("InstallTrigger(%+v) succeeded, want an error", spec)
		}
	}
	exec(t, env.DB, `INSERT INTO listings (id, secret) VALUES (1, 'x')`)
	if rows := claimAll(t, env.Source); len(rows) != 0 {
		t.Fatalf("a rejected trigger captured %d rows", len(rows))
	}
}

func testRemoveTrigger(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	exec(t, env.DB, `INSERT INTO listings (id, name) VALUES (1, 'a')`)
	first := claimAll(t, env.Source)
	if len(first) != 1 {
		t.Fatalf("got %d rows, want 1", len(first))
	}
	if err := env.Source.RemoveTrigger(ctx, "listings"); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `UPDATE listings SET name = 'b' WHERE id = 1`)
	if rows := claimAll(t, env.Source); len(rows) != 0 {
		t.Fatalf("removed trigger still captured %d rows", len(rows))
	}
	// Versions kept increasing while uncaptured, so a snapshot taken now
	// is newer than anything published before.
	var snap []event.Event
	if err := env.Source.Snapshot(ctx, source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"},
		func(page []event.Event, _ string) error { snap = append(snap, page...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(snap) != 1 || snap[0].Version <= first[0].Version {
		t.Fatalf("snapshot after uncaptured update: %+v, want version above %d", snap, first[0].Version)
	}
}

func insertListings(t *testing.T, db *sql.DB, from, to int) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i <= to; i++ {
		if _, err := tx.Exec(`INSERT INTO listings (id, name, price) VALUES ($1, $2, $3)`, i, "n"+strconv.Itoa(i), i); err != nil {
			_ = tx.Rollback()
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// testOddRows: a row whose stored values fit no Row field is claimed with
// its faults named, never failing the claim, which would hold back every
// row behind it for good (the next claim takes the same rows in id order).
func testOddRows(t *testing.T, env Env, odd []OddRow) {
	if len(odd) == 0 {
		t.Skip("the adapter declares no odd rows")
	}
	setup(t, env)
	insertListings(t, env.DB, 1, 1)
	for _, o := range odd {
		exec(t, env.DB, o.Insert)
	}
	insertListings(t, env.DB, 2, 2)
	rows := claimAll(t, env.Source)
	if len(rows) != len(odd)+2 {
		t.Fatalf("claimed %d rows, want %d", len(rows), len(odd)+2)
	}
	if !slices.IsSortedFunc(rows, func(a, b source.Row) int { return cmp.Compare(a.ID, b.ID) }) {
		t.Fatalf("rows out of id order: %v", ids(rows))
	}
	for i, r := range rows {
		want := ""
		if i > 0 && i <= len(odd) {
			want = odd[i-1].Fault
		}
		switch {
		case want == "" && len(r.Faults) > 0:
			t.Errorf("row %d (%s): faults %v, want none", r.ID, insertOf(odd, i), r.Faults)
		case want != "" && (len(r.Faults) != 1 || r.Faults[0].Column != want || r.Faults[0].Value == "" || r.Faults[0].Problem == ""):
			t.Errorf("row %d (%s): faults %v, want one on %s with the stored value and the problem", r.ID, insertOf(odd, i), r.Faults, want)
		}
	}
	if rows[0].Key != "1" || rows[len(rows)-1].Key != "2" {
		t.Fatalf("the good rows around the odd ones: keys %q and %q", rows[0].Key, rows[len(rows)-1].Key)
	}
}

func insertOf(odd []OddRow, i int) string {
	if i > 0 && i <= len(odd) {
		return odd[i-1].Insert
	}
	return "a listing"
}

func testClaim(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	insertListings(t, env.DB, 1, 5)
	bl, err := env.Source.Backlog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bl.Rows != 5 || bl.Oldest.IsZero() {
		t.Fatalf("backlog %+v, want 5 rows with an oldest time", bl)
	}
	b, err := env.Source.Claim(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Rows()) != 3 {
		t.Fatalf("claimed %d rows, want 3", len(b.Rows()))
	}
	firstIDs := ids(b.Rows())
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	b, err = env.Source.Claim(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(b.Rows()); !slices.Equal(got, firstIDs) {
		t.Fatalf("after Release claimed %v, want the same rows %v again", got, firstIDs)
	}
	if err := b.MarkSent(ctx); err != nil {
		t.Fatal(err)
	}
	rest := claimAll(t, env.Source)
	if len(rest) != 2 {
		t.Fatalf("after MarkSent %d rows left, want 2", len(rest))
	}
	for _, r := range rest {
		if slices.Contains(firstIDs, r.ID) {
			t.Fatalf("row %d claimed again after MarkSent", r.ID)
		}
	}
	if bl, err = env.Source.Backlog(ctx); err != nil || bl.Rows != 0 || !bl.Oldest.IsZero() {
		t.Fatalf("backlog after all sent: %+v %v", bl, err)
	}
}

func ids(rows []source.Row) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

func testConcurrentClaimers(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	const total = 300
	insertListings(t, env.DB, 1, total)

	// Two open claims never overlap.
	a, err := env.Source.Claim(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Source.Claim(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rows()) != 10 || len(b.Rows()) != 10 {
		t.Fatalf("claims got %d and %d rows, want 10 each", len(a.Rows()), len(b.Rows()))
	}
	for _, id := range ids(b.Rows()) {
		if slices.Contains(ids(a.Rows()), id) {
			t.Fatalf("row %d claimed by two open claims", id)
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}

	// Four claimers drain the outbox; every row is sent exactly once.
	var mu sync.Mutex
	seen := map[int64]int{}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				b, err := env.Source.Claim(ctx, 7)
				if err != nil {
					errs <- err
					return
				}
				rows := b.Rows()
				mu.Lock()
				for _, r := range rows {
					seen[r.ID]++
				}
				mu.Unlock()
				if err := b.MarkSent(ctx); err != nil {
					errs <- err
					return
				}
				if len(rows) == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("claimer: %v", err)
	}
	if len(seen) != total {
		t.Fatalf("claimers saw %d distinct rows, want %d", len(seen), total)
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("row %d claimed %d times", id, n)
		}
	}
}

// testMissingTable: a mistyped table fails Count, Snapshot and
// InstallTrigger with a TableNotFoundError that names the closest table.
func testMissingTable(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	spec := source.SnapshotSpec{Table: "listngs", Entity: "listing", KeyColumn: "id"}
	_, countErr := env.Source.Count(ctx, spec)
	errs := map[string]error{
		"Count":          countErr,
		"Snapshot":       env.Source.Snapshot(ctx, spec, func([]event.Event, string) error { return nil }),
		"InstallTrigger": env.Source.InstallTrigger(ctx, source.TriggerSpec{Table: "listngs", Entity: "listing", KeyColumn: "id"}),
	}
	for name, err := range errs {
		var nf *source.TableNotFoundError
		if !errors.As(err, &nf) || !errors.Is(err, source.ErrTableNotFound) || nf.Table != "listngs" || nf.Closest != "listings" ||
			!strings.Contains(err.Error(), "did you mean listings?") {
			t.Errorf("%s of a mistyped table: %v, want a TableNotFoundError suggesting listings", name, err)
		}
	}
	_, err := env.Source.Count(ctx, source.SnapshotSpec{Table: "payments", Entity: "payment", KeyColumn: "id"})
	var nf *source.TableNotFoundError
	if !errors.As(err, &nf) || nf.Closest != "" {
		t.Errorf("Count of a table nothing resembles: %v, want a TableNotFoundError without a suggestion", err)
	}
}

func testSnapshot(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	insertListings(t, env.DB, 1, 50)
	exec(t, env.DB, `UPDATE listings SET secret = 's' WHERE id = 7`)
	before := map[string]int64{}
	for _, r := range claimAll(t, env.Source) {
		before[r.Key] = r.Version
	}

	spec := source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", PageSize: 10, ExcludeColumns: []string{"secret"}}
	var got []event.Event
	pages := 0
	err := env.Source.Snapshot(ctx, spec, func(page []event.Event, lastKey string) error {
		pages++
		if lastKey != page[len(page)-1].Key {
			t.Errorf("lastKey %q, page ends with %q", lastKey, page[len(page)-1].Key)
		}
		got = append(got, page...)
		if pages == 1 {
			// Concurrent changes while the snapshot runs must not show up.
			exec(t, env.DB, `UPDATE listings SET name = 'changed' WHERE id IN (30, 40)`)
			exec(t, env.DB, `DELETE FROM listings WHERE id = 45`)
			exec(t, env.DB, `INSERT INTO listings (id, name) VALUES (51, 'new')`)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if pages != 5 || len(got) != 50 {
		t.Fatalf("snapshot read %d rows in %d pages, want 50 in 5", len(got), pages)
	}
	for i, ev := range got {
		if ev.Key != strconv.Itoa(i+1) {
			t.Fatalf("row %d has key %q: keys must come in native (numeric) order", i, ev.Key)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("snapshot event invalid: %v", err)
		}
		d := decode(t, ev.Data)
		if d["name"] != "n"+ev.Key {
			t.Fatalf("key %s: snapshot saw %v, a change made during the snapshot", ev.Key, d["name"])
		}
		if _, ok := d["secret"]; ok {
			t.Fatalf("key %s: excluded column in snapshot data", ev.Key)
		}
		if _, ok := d[source.VersionColumn]; ok {
			t.Fatalf("key %s: %s in snapshot data", ev.Key, source.VersionColumn)
		}
		if ev.Version < before[ev.Key] {
			t.Fatalf("key %s: snapshot version %d below published %d", ev.Key, ev.Version, before[ev.Key])
		}
	}
	// Every live change made during the snapshot is newer than what the
	// snapshot read, so the old snapshot data loses.
	snapVersion := map[string]int64{}
	for _, ev := range got {
		snapVersion[ev.Key] = ev.Version
	}
	live := claimAll(t, env.Source)
	if len(live) != 4 {
		t.Fatalf("got %d live events for the concurrent changes, want 4", len(live))
	}
	for _, r := range live {
		if sv, ok := snapVersion[r.Key]; ok && r.Version <= sv {
			t.Fatalf("live %s of key %s has version %d, not above snapshot version %d", r.Op, r.Key, r.Version, sv)
		}
	}
	n, err := env.Source.Count(ctx, spec)
	if err != nil || n != 50 { // 49 old + 51
		t.Fatalf("Count = %d, %v; want 50", n, err)
	}
}

func testSnapshotResume(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	insertListings(t, env.DB, 1, 25)
	spec := source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", PageSize: 4, AfterKey: "9", Where: "price <> 20"}
	var keys []string
	stop := errors.New("stop")
	err := env.Source.Snapshot(ctx, spec, func(page []event.Event, lastKey string) error {
		for _, ev := range page {
			keys = append(keys, ev.Key)
		}
		if len(keys) >= 8 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Snapshot returned %v, want the callback's error", err)
	}
	want := []string{"10", "11", "12", "13", "14", "15", "16", "17"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys after 9: %v, want %v", keys, want)
	}
	spec.AfterKey = keys[len(keys)-1]
	keys = nil
	if err := env.Source.Snapshot(ctx, spec, func(page []event.Event, _ string) error {
		for _, ev := range page {
			keys = append(keys, ev.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want = []string{"18", "19", "21", "22", "23", "24", "25"} // 20 filtered by Where
	if !slices.Equal(keys, want) {
		t.Fatalf("resumed keys: %v, want %v", keys, want)
	}
	n, err := env.Source.Count(ctx, spec)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Count after 17 = %d, %v; want %d", n, err, len(want))
	}
	if _, err := env.Source.Count(ctx, source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", VersionColumn: "missing"}); err == nil {
		t.Fatal("Count with a missing version column succeeded")
	}
}

func testCleanup(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	insertListings(t, env.DB, 1, 30)
	b, err := env.Source.Claim(ctx, 25)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.MarkSent(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := env.Source.Cleanup(ctx, time.Hour, 10)
	if err != nil || n != 0 {
		t.Fatalf("Cleanup(1h) deleted %d, %v; want 0 (rows were just sent)", n, err)
	}
	time.Sleep(20 * time.Millisecond) // let sent_at fall behind the retention
	n, err = env.Source.Cleanup(ctx, time.Millisecond, 10)
	if err != nil || n != 25 {
		t.Fatalf("Cleanup deleted %d, %v; want the 25 sent rows", n, err)
	}
	bl, err := env.Source.Backlog(ctx)
	if err != nil || bl.Rows != 5 {
		t.Fatalf("backlog after cleanup %+v, %v; want the 5 unsent rows kept", bl, err)
	}
	// Ids are never reused after cleanup, so event ids stay unique.
	exec(t, env.DB, `INSERT INTO listings (id, name) VALUES (100, 'x')`)
	rows := claimAll(t, env.Source)
	if rows[len(rows)-1].ID <= 30 {
		t.Fatalf("new row got id %d, reusing a deleted id", rows[len(rows)-1].ID)
	}
}

func testWait(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	// Nothing new: Wait returns nil after max.
	if err := env.Source.Wait(ctx, 50*time.Millisecond); err != nil {
		t.Fatalf("Wait timeout: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- env.Source.Wait(ctx, 30*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	exec(t, env.DB, `INSERT INTO listings (id, name) VALUES (1, 'a')`)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait did not wake up for a new row")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := env.Source.Wait(cctx, time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context: %v", err)
	}
}

// testLateCommit is the relay's classic trap: ids are allocated before
// commit, so a transaction committing after a later id must still be found.
func testLateCommit(t *testing.T, env Env) {
	ctx := ctxT(t)
	setup(t, env)
	slow, err := env.DB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback() }()
	if _, err := slow.ExecContext(ctx, `INSERT INTO listings (id, name) VALUES (1, 'slow')`); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `INSERT INTO listings (id, name) VALUES (2, 'fast')`)
	rows := claimAll(t, env.Source)
	if len(rows) != 1 || rows[0].Key != "2" {
		t.Fatalf("before the slow commit claimed %+v, want only key 2", rows)
	}
	fastID := rows[0].ID
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	rows = claimAll(t, env.Source)
	if len(rows) != 1 || rows[0].Key != "1" {
		t.Fatalf("after the slow commit claimed %+v, want key 1", rows)
	}
	// The late row's id is below the one already sent: the trap was real.
	if rows[0].ID >= fastID {
		t.Fatalf("late row id %d is not below the already sent id %d; the test did not set up the trap", rows[0].ID, fastID)
	}
}
