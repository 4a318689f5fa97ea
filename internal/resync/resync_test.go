package resync_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/source"
	pgsource "github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sourcetest"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store"
	pgstore "github.com/eventsync/eventsync/store/postgres"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// pgTable creates a listings table of n rows in a schema of its own,
// installs the outbox and its trigger (which stamps every existing row
// with a version), and returns the source and a pool on the same schema.
func pgTable(t testing.TB, n int) (*pgsource.Source, *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	dsn := sourcetest.PostgresDSN(t)
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE listings (id bigint PRIMARY KEY, title text NOT NULL, price int NOT NULL, secret text)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO listings SELECT g, 'title '||g, g*10, 'pw' FROM generate_series(1, $1) g`, n); err != nil {
		t.Fatal(err)
	}
	src, err := pgsource.Open(ctx, pgsource.Config{DSN: dsn, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	return src, pool
}

// stateStore opens the PostgreSQL state store in a schema of its own and
// drops it when the test ends. (PostgreSQL rather than Redis: Scan and
// ListControl are queries on the schema's tables there, while on a shared
// Redis they walk every key of every other test.)
func stateStore(t testing.TB) *pgstore.Store {
	t.Helper()
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("es_resync")
	st, err := pgstore.Open(context.Background(), pgstore.Config{DSN: dsn, Schema: schema, MaxConns: 4, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = st.Close()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("cleanup: drop schema %s: %v", schema, err)
		}
	})
	return st
}

func spec() resync.Spec {
	return resync.Spec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}, PageSize: 1000}
}

func ready(t testing.TB, b bus.Bus) int64 {
	t.Helper()
	st, err := b.Stats(context.Background(), bus.Resync)
	if err != nil {
		t.Fatal(err)
	}
	return st.Ready
}

// consume reads and acks resync events until none arrives for a second.
func consume(t testing.TB, b bus.Bus) []event.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := b.Subscribe(ctx, bus.Resync, bus.SubscribeOptions{Prefetch: 500})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	var out []event.Event
	for {
		select {
		case d, ok := <-sub.Deliveries():
			if !ok {
				return out
			}
			ev, err := event.Parse(d.Body(), 0)
			if err != nil {
				t.Fatalf("resync published an invalid event %s: %v", d.Body(), err)
			}
			out = append(out, ev)
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		case <-time.After(time.Second):
			return out
		}
	}
}

func TestPublishesVersionedPagesAndCheckpoints(t *testing.T) {
	t.Parallel()
	src, pool := pgTable(t, 2500)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()

	var reports []resync.Progress
	res, err := resync.Run(ctx, src, b, st, spec(), resync.WithLogger(quiet), resync.WithProgress(func(p resync.Progress) { reports = append(reports, p) }))
	if err != nil {
		t.Fatal(err)
	}
	if !res.Done || res.SegmentRows != 2500 || res.Rows != 2500 || res.Total != 2500 || res.Pages != 3 {
		t.Fatalf("result %+v, want done with 2500 rows in 3 pages", res)
	}
	if len(reports) < 3 || reports[len(reports)-1].Rows != 2500 || reports[len(reports)-1].Total != 2500 {
		t.Errorf("progress reports %+v do not end at 2500/2500", reports)
	}

	versions := map[string]int64{}
	rows, err := pool.Query(ctx, `SELECT id::text, eventsync_version FROM listings`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		versions[k] = v
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}

	evs := consume(t, b)
	if len(evs) != 2500 {
		t.Fatalf("consumed %d events, want 2500", len(evs))
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev.Key] {
			t.Errorf("key %s published twice", ev.Key)
		}
		seen[ev.Key] = true
		if ev.Op != event.OpUpsert || ev.Entity != "listing" || ev.Version != versions[ev.Key] || ev.Version < 1 {
			t.Errorf("event %+v: want an upsert of listing at the row's version %d", ev, versions[ev.Key])
		}
		if want := "resync-" + res.RunID + "-" + ev.Key; ev.ID != want {
			t.Errorf("event id %q, want %q", ev.ID, want)
		}
		var data map[string]any
		if err := json.Unmarshal(ev.Data, &data); err != nil {
			t.Fatal(err)
		}
		if data["title"] != "title "+ev.Key || data["secret"] != nil || data[source.VersionColumn] != nil {
			t.Errorf("data %v: want the title, without the excluded column or the version", data)
		}
	}

	cp, ok, err := resync.LoadCheckpoint(ctx, st, res.RunID)
	if err != nil || !ok {
		t.Fatalf("checkpoint: %v %v", ok, err)
	}
	if !cp.Done || cp.Finished == nil || cp.Rows != 2500 || cp.Total != 2500 || cp.LastKey != "2500" || cp.Segments != 1 || cp.Started.IsZero() {
		t.Errorf("checkpoint %+v, want done at key 2500 with 2500 rows", cp)
	}
}

// failingControl is the real store whose checkpoint writes start failing
// after a number of calls: the process dies between a confirmed publish
// and its checkpoint, the worst moment for duplicates.
type failingControl struct {
	store.Store
	allowed atomic.Int64
}

func (f *failingControl) SetControl(ctx context.Context, name string, v []byte, ttl time.Duration) error {
	if f.allowed.Add(-1) < 0 {
		return errors.New("simulated crash before the checkpoint write")
	}
	return f.Store.SetControl(ctx, name, v, ttl)
}

func TestResumeAfterCrashPublishesAtMostOnePageTwice(t *testing.T) {
	t.Parallel()
	const rows, page = 5000, 500
	src, _ := pgTable(t, rows)
	ctx := context.Background()
	sp := spec()
	sp.PageSize = page

	t.Run("interrupted", func(t *testing.T) {
		b := rabbitmqtest.Open(t, rabbitmq.Config{})
		st := stateStore(t)
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		res, err := resync.Run(runCtx, src, b, st, sp, resync.WithProgress(func(p resync.Progress) {
			if p.Rows >= rows/2 {
				cancel() // ctrl-C at half way
			}
		}))
		if !errors.Is(err, context.Canceled) || res.Done {
			t.Fatalf("interrupted run: done=%v err=%v, want context.Canceled", res.Done, err)
		}
		cp, _, err := resync.LoadCheckpoint(ctx, st, res.RunID)
		if err != nil || cp.Done || cp.Rows != rows/2 || cp.LastKey != strconv.Itoa(rows/2) {
			t.Fatalf("checkpoint after interrupt %+v (%v), want rows %d at key %d", cp, err, rows/2, rows/2)
		}
		res2, err := resync.Run(ctx, src, b, st, sp)
		if err != nil {
			t.Fatal(err)
		}
		if !res2.Resumed || res2.ResumedAfter != strconv.Itoa(rows/2) || res2.SegmentRows != rows/2 || res2.Rows != rows || !res2.Done {
			t.Fatalf("resumed run %+v, want it to continue after key %d", res2, rows/2)
		}
		if got := checkPublished(t, b, rows, page); got != rows {
			t.Errorf("published %d; an interrupt between pages must not publish a page twice", got)
		}
	})

	t.Run("crash between confirm and checkpoint", func(t *testing.T) {
		b := rabbitmqtest.Open(t, rabbitmq.Config{})
		st := stateStore(t)
		fc := &failingControl{Store: st}
		fc.allowed.Store(1 + 4) // the initial record and four pages
		res, err := resync.Run(ctx, src, b, fc, sp)
		if err == nil {
			t.Fatal("want the simulated crash")
		}
		cp, _, _ := resync.LoadCheckpoint(ctx, st, res.RunID)
		if cp.Rows != 4*page {
			t.Fatalf("checkpoint %+v, want 4 pages", cp)
		}
		res2, err := resync.Run(ctx, src, b, st, sp)
		if err != nil {
			t.Fatal(err)
		}
		if !res2.Resumed || res2.Rows != rows || res2.SegmentRows != rows-4*page {
			t.Fatalf("resumed run %+v", res2)
		}
		cp, _, _ = resync.LoadCheckpoint(ctx, st, res.RunID)
		if !cp.Done || cp.Segments != 2 {
			t.Errorf("checkpoint %+v, want done after 2 segments", cp)
		}
		// The fifth page was confirmed but not checkpointed: published twice.
		if got := checkPublished(t, b, rows, page); got != rows+page {
			t.Errorf("published %d, want exactly rows + one page = %d", got, rows+page)
		}
	})
}

// checkPublished asserts every key was published and no more than one
// page twice; it returns how many events were published.
func checkPublished(t *testing.T, b bus.Bus, rows, page int) int {
	t.Helper()
	evs := consume(t, b)
	keys := map[string]int{}
	for _, ev := range evs {
		keys[ev.Key]++
	}
	if len(keys) != rows {
		t.Errorf("%d distinct keys published, want %d", len(keys), rows)
	}
	if len(evs) > rows+page {
		t.Errorf("%d events published for %d rows: more than one page (%d) twice", len(evs), rows, page)
	}
	t.Logf("%d events published for %d rows (page %d)", len(evs), rows, page)
	return len(evs)
}

func TestDryRunPublishesAndWritesNothing(t *testing.T) {
	t.Parallel()
	src, _ := pgTable(t, 1234)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()
	sp := spec()
	sp.DryRun = true
	res, err := resync.Run(ctx, src, b, st, sp)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DryRun || res.Remaining != 1234 || res.SegmentRows != 0 || res.Done {
		t.Fatalf("dry run %+v", res)
	}
	if n := ready(t, b); n != 0 {
		t.Errorf("dry run published %d events", n)
	}
	if _, ok, _ := resync.LoadCheckpoint(ctx, st, res.RunID); ok {
		t.Error("dry run wrote a checkpoint")
	}
	// A dry run needs no bus at all.
	if _, err := resync.Run(ctx, src, nil, st, sp); err != nil {
		t.Errorf("dry run without a bus: %v", err)
	}
}

func TestRerunAfterCompletionStartsANewRun(t *testing.T) {
	t.Parallel()
	src, _ := pgTable(t, 300)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()
	first, err := resync.Run(ctx, src, b, st, spec())
	if err != nil {
		t.Fatal(err)
	}
	second, err := resync.Run(ctx, src, b, st, spec())
	if err != nil {
		t.Fatal(err)
	}
	if !second.PreviousDone || second.Resumed || second.SegmentRows != 300 || second.RunID != first.RunID {
		t.Errorf("second run %+v, want a new run of all 300 rows under the same id", second)
	}
	if n := ready(t, b); n != 600 {
		t.Errorf("%d events queued, want 600", n)
	}

	// The same run id with other settings is refused, not mixed up.
	other := spec()
	other.RunID, other.Where = first.RunID, "price > 100"
	if res, err := resync.Run(ctx, src, b, st, other); err == nil || !contains(err.Error(), "other settings") || res.RunID != "" {
		t.Errorf("run id reused with another filter: %+v, %v; want a run that never started", res, err)
	}
	// Unless restarted: then the where condition applies.
	other.Restart = true
	res, err := resync.Run(ctx, src, b, st, other)
	if err != nil || res.SegmentRows != 290 {
		t.Errorf("restart with where: %+v %v, want 290 rows", res, err)
	}
}

func TestNullVersionNamesTheFix(t *testing.T) {
	t.Parallel()
	src, pool := pgTable(t, 10)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `ALTER TABLE listings ADD COLUMN rev bigint; UPDATE listings SET rev = id WHERE id < 5`); err != nil {
		t.Fatal(err)
	}
	sp := spec()
	sp.VersionColumn = "rev"
	_, err := resync.Run(ctx, src, b, st, sp)
	if !errors.Is(err, resync.ErrNullVersion) || !contains(err.Error(), "install-trigger") || setting.Key(err) != "resync.version_col" {
		t.Fatalf("error %v (setting %q), want ErrNullVersion naming install-trigger and the version column setting", err, setting.Key(err))
	}
}

// A mistyped table fails the run before it starts: no checkpoint, nothing
// published, no "interrupted after 0 of 0 rows"; the error names the table
// and the closest one, even under the run id of another run.
func TestMissingTableFailsBeforeStarting(t *testing.T) {
	t.Parallel()
	src, _ := pgTable(t, 20)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()
	done, err := resync.Run(ctx, src, b, st, spec())
	if err != nil {
		t.Fatal(err)
	}
	consume(t, b)
	typo := spec()
	typo.Table = "listngs"
	for _, runID := range []string{"", done.RunID} {
		typo.RunID = runID
		var progress int
		res, err := resync.Run(ctx, src, b, st, typo, resync.WithProgress(func(resync.Progress) { progress++ }))
		if !errors.Is(err, source.ErrTableNotFound) || !contains(err.Error(), `"listngs"`) || !contains(err.Error(), "did you mean listings?") {
			t.Fatalf("run id %q: error %v, want the missing table and the closest one", runID, err)
		}
		if key := setting.Key(err); key != "resync.table" {
			t.Errorf("run id %q: error names setting %q, want resync.table", runID, key)
		}
		if res != (resync.Result{}) || progress != 0 {
			t.Errorf("run id %q: result %+v and %d progress reports, want a run that never started", runID, res, progress)
		}
	}
	if _, ok, _ := resync.LoadCheckpoint(ctx, st, resync.DefaultRunID(typo)); ok {
		t.Error("the mistyped run wrote a checkpoint")
	}
	if n := ready(t, b); n != 0 {
		t.Errorf("the mistyped run published %d events", n)
	}
}

func TestSQLiteSource(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	db := src.DB()
	if _, err := db.ExecContext(ctx, `CREATE TABLE listings (id TEXT PRIMARY KEY, title TEXT, price INTEGER, secret TEXT, rev INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range 450 {
		if _, err := db.ExecContext(ctx, `INSERT INTO listings VALUES (?, ?, ?, 'pw', NULL)`, fmt.Sprintf("k%04d", i), fmt.Sprintf("t%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	sp := spec()
	sp.PageSize = 100
	res, err := resync.Run(ctx, src, b, st, sp)
	if err != nil {
		t.Fatal(err)
	}
	if res.SegmentRows != 450 || res.Pages != 5 {
		t.Fatalf("result %+v", res)
	}
	evs := consume(t, b)
	if len(evs) != 450 || evs[0].Version < 1 {
		t.Fatalf("%d events", len(evs))
	}
	cp, _, _ := resync.LoadCheckpoint(ctx, st, res.RunID)
	if cp.LastKey != "k0449" || !cp.Done {
		t.Errorf("checkpoint %+v", cp)
	}

	sp.VersionColumn, sp.RunID = "rev", "sqlite-null"
	if _, err := resync.Run(ctx, src, b, st, sp); !errors.Is(err, resync.ErrNullVersion) {
		t.Errorf("NULL version on SQLite: %v, want ErrNullVersion", err)
	}
}

// commit records an applied state for key as a worker would.
func commit(t *testing.T, st store.Store, key string, version int64, deleted bool) {
	t.Helper()
	ctx := context.Background()
	k := store.Key{Entity: "listing", Key: key}
	l, _, err := st.Acquire(ctx, k, "test", time.Minute, version)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, l, store.Commit{Version: version, RemoteID: "r-" + key, Deleted: deleted}); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteMissing(t *testing.T) {
	t.Parallel()
	src, pool := pgTable(t, 50)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx := context.Background()
	for i := 1; i <= 50; i++ {
		commit(t, st, strconv.Itoa(i), 1, false)
	}
	// Rows deleted at the source while their delete event was lost, and
	// one whose delete was applied already.
	if _, err := pool.Exec(ctx, `DELETE FROM listings WHERE id IN (7, 8)`); err != nil {
		t.Fatal(err)
	}
	commit(t, st, "ghost", 41, false)
	commit(t, st, "gone", 5, true)

	sp := spec()
	sp.DeleteMissing = true
	res, err := resync.Run(ctx, src, b, st, sp, resync.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	m := res.Missing
	if m == nil || m.Applied || m.Missing != 3 || m.Published != 0 || fmt.Sprint(m.Sample) != "[7 8 ghost]" {
		t.Fatalf("report-only delete-missing %+v, want 7, 8 and ghost", m)
	}
	if n := len(consume(t, b)); n != 48 {
		t.Fatalf("%d events, want the 48 upserts and no delete", n)
	}

	sp.ApplyDeletes = true
	res, err = resync.Run(ctx, src, b, st, sp, resync.WithStore(st))
	if err != nil {
		t.Fatal(err)
	}
	if res.Missing.Published != 3 {
		t.Fatalf("delete-missing %+v, want 3 deletes", res.Missing)
	}
	deletes := map[string]int64{}
	for _, ev := range consume(t, b) {
		if ev.Op == event.OpDelete {
			deletes[ev.Key] = ev.Version
		}
	}
	if fmt.Sprint(deletes) != "map[7:2 8:2 ghost:42]" {
		t.Errorf("deletes %v, want applied version + 1 for 7, 8 and ghost", deletes)
	}
	cp, _, _ := resync.LoadCheckpoint(ctx, st, res.RunID)
	if cp.Deletes != 3 {
		t.Errorf("checkpoint counts %d deletes, want 3", cp.Deletes)
	}

	// A dry run reports the same without publishing.
	sp.DryRun, sp.ApplyDeletes = true, false
	res, err = resync.Run(ctx, src, nil, st, sp, resync.WithStore(st))
	if err != nil || res.Missing.Missing != 3 {
		t.Errorf("dry run delete-missing %+v %v", res.Missing, err)
	}
}

func TestPauseLiveResumesOnlyAfterTheResyncStreamDrained(t *testing.T) {
	t.Parallel()
	src, _ := pgTable(t, 400)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A consumer that starts late and applies the resync stream slowly.
	acked, consumerDone := ackAll(ctx, b, 2*time.Second)

	sp := spec()
	sp.PauseLive = true
	var pausedDuringRun atomic.Bool
	res, err := resync.Run(ctx, src, b, st, sp, resync.WithDrain(b, 200*time.Millisecond, time.Second),
		resync.WithProgress(func(p resync.Progress) {
			if p, _ := control.Paused(ctx, st, bus.Live); p != nil && contains(p.Reason, "resync") {
				pausedDuringRun.Store(true)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	if !pausedDuringRun.Load() || !res.LivePaused {
		t.Error("live was not paused during the run")
	}
	if n := acked.Load(); n != 400 {
		t.Errorf("returned with %d of 400 resync events applied", n)
	}
	if p, _ := control.Paused(ctx, st, bus.Live); p != nil {
		t.Errorf("live still paused after the run: %+v", p)
	}
	cancel()
	<-consumerDone

	// An operator's pause is left in place, and an interrupted wait still
	// resumes a pause of our own.
	if err := control.SetPaused(context.Background(), st, bus.Live, true, "operator", "maintenance"); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	_, consumer2Done := ackAll(ctx2, b, 0)
	res, err = resync.Run(context.Background(), src, b, st, sp, resync.WithDrain(b, 100*time.Millisecond, time.Second))
	cancel2()
	<-consumer2Done
	if err != nil || res.LivePaused {
		t.Fatalf("run under an operator's pause: %+v %v", res, err)
	}
	if p, _ := control.Paused(context.Background(), st, bus.Live); p == nil || p.By != "operator" {
		t.Errorf("operator's pause was lifted: %+v", p)
	}
	_ = control.SetPaused(context.Background(), st, bus.Live, false, "operator", "")

	waitCtx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	sp.Restart = true
	_, err = resync.Run(waitCtx, src, b, st, sp, resync.WithDrain(b, 100*time.Millisecond, time.Second))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait without consumers ended with %v, want the deadline", err)
	}
	if p, _ := control.Paused(context.Background(), st, bus.Live); p != nil {
		t.Errorf("live still paused after an interrupted wait: %+v", p)
	}
}

// ackAll consumes and acks the resync stream after delay until ctx ends.
func ackAll(ctx context.Context, b bus.Bus, delay time.Duration) (*atomic.Int64, chan struct{}) {
	var acked atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		sub, err := b.Subscribe(ctx, bus.Resync, bus.SubscribeOptions{Prefetch: 50})
		if err != nil {
			return
		}
		defer func() { _ = sub.Close() }()
		for d := range sub.Deliveries() {
			time.Sleep(time.Millisecond)
			if d.Ack(ctx) == nil {
				acked.Add(1)
			}
		}
	}()
	return &acked, done
}

func TestSpecValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		spec resync.Spec
		want string
	}{
		{"bad entity", resync.Spec{Table: "t", Entity: "Bad", KeyColumn: "id"}, "entity"},
		{"bad table", resync.Spec{Table: "t;drop", Entity: "e", KeyColumn: "id"}, "table"},
		{"bad run id", resync.Spec{Table: "t", Entity: "e", KeyColumn: "id", RunID: "a/b"}, "run id"},
		{"yes alone", resync.Spec{Table: "t", Entity: "e", KeyColumn: "id", ApplyDeletes: true}, "without DeleteMissing"},
		{"where with ;", resync.Spec{Table: "t", Entity: "e", KeyColumn: "id", Where: "1=1; drop table t"}, "';'"},
	}
	for _, c := range cases {
		err := c.spec.WithDefaults().Validate()
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, err, c.want)
		}
	}
	ok := resync.Spec{Table: "s.t", Entity: "e", KeyColumn: "id"}.WithDefaults()
	if err := ok.Validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
	if ok.RunID != resync.DefaultRunID(resync.Spec{Table: "s.t", Entity: "e", KeyColumn: "id"}) || ok.PageSize != resync.DefaultPageSize {
		t.Errorf("defaults %+v", ok)
	}
	other := resync.Spec{Table: "s.t", Entity: "e", KeyColumn: "id", Where: "x"}
	if resync.DefaultRunID(other) == ok.RunID {
		t.Error("a different where condition must give a different default run id")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// A resync killed during --pause-live leaves its pause behind; the run that
// picks up its checkpoint (same run id) lifts it when it ends.
func TestPauseLiveLeftByAKilledRunIsLiftedByItsRerun(t *testing.T) {
	t.Parallel()
	src, _ := pgTable(t, 50)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	st := stateStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, consumerDone := ackAll(ctx, b, 0)
	defer func() { cancel(); <-consumerDone }()

	sp := spec()
	sp.PauseLive = true
	reason := "resync " + sp.WithDefaults().RunID
	if err := control.SetPaused(ctx, st, bus.Live, true, reason+" (killed-host-1)", reason); err != nil {
		t.Fatal(err)
	}
	res, err := resync.Run(ctx, src, b, st, sp, resync.WithDrain(b, 100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !res.LivePaused {
		t.Error("the rerun did not take over its run's pause")
	}
	if p, _ := control.Paused(ctx, st, bus.Live); p != nil {
		t.Errorf("live still paused after the rerun: %+v", p)
	}
}
