package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/source/sourcetest"
	"github.com/eventsync/eventsync/store"
	pgstore "github.com/eventsync/eventsync/store/postgres"
)

// resyncRows is the table size of the resync tests: the 100,000
// rows with EVENTSYNC_LONG_TESTS=1, 20,000 otherwise to fit the CI budget.
func resyncRows() int {
	if os.Getenv("EVENTSYNC_LONG_TESTS") == "1" {
		return 100_000
	}
	return 20_000
}

// resyncEnv is one isolated deployment: a source schema with a listings
// table, a RabbitMQ namespace, a PostgreSQL state store schema, and a
// config file the processes share.
type resyncEnv struct {
	ns        string
	sourceDSN string
	amqpURL   string
	storeURL  string
	cfgPath   string
	db        *pgxpool.Pool
	bus       *rabbitmq.Bus
	store     *pgstore.Store
	api       *fakeapi.Running
}

func newResyncEnv(t *testing.T, ctx context.Context, rows int, faults fakeapi.Faults) *resyncEnv {
	t.Helper()
	e := &resyncEnv{ns: testenv.UniqueName("e2e_rs"), amqpURL: testenv.RabbitMQ(t)}
	e.sourceDSN = sourcetest.PostgresDSN(t)
	base := testenv.Postgres(t)
	// Every process of the deployment has pools of its own on the suite's
	// shared PostgreSQL: two connections each is plenty here.
	e.storeURL = testenv.PostgresPool(t, 2)
	t.Cleanup(func() { dropSchema(t, base, e.ns) })

	var err error
	if e.db, err = pgxpool.New(ctx, testenv.WithParam(e.sourceDSN, "pool_max_conns", "2")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.db.Close)
	// The existing data is there before the trigger: only a resync can
	// bring it to the API, as when a deployment goes live.
	if _, err := e.db.Exec(ctx, `CREATE TABLE listings (id bigint PRIMARY KEY, title text NOT NULL, price int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Exec(ctx, `INSERT INTO listings SELECT g, 'listing '||g, g % 1000 FROM generate_series(1, $1) g`, rows); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"outbox", "install", "--source", e.sourceDSN},
		{"outbox", "install-trigger", "--source", e.sourceDSN, "--table", "listings", "--entity", "listing", "--key", "id"},
	} {
		if out, err := run(t, ctx, args...); err != nil {
			t.Fatalf("eventsync %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}

	if e.api, err = fakeapi.Start(ctx, fakeapi.Config{Seed: uint64(time.Now().UnixNano()), Faults: faults}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.api.Close() })
	if e.bus, err = rabbitmq.Open(ctx, rabbitmq.Config{URL: e.amqpURL, Namespace: e.ns}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteQueues(t, e.amqpURL, e.bus)
		_ = e.bus.Close()
	})
	if e.store, err = pgstore.Open(ctx, pgstore.Config{DSN: base, Schema: e.ns, MaxConns: 1}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.store.Close() })

	e.cfgPath = filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf(`bus: %s
store: %s
namespace: %s
worker:
  concurrency: 48
  lease_ttl: 15s
  backoff_base: 200ms
  backoff_max: 2s
  max_attempts: 100
  shutdown_grace: 5s
throttle:
  enabled: %t
log:
  level: info
sink:
  defaults:
    base_url: %s
    timeout: 2s
  entities:
    listing:
      collection: listings
`, e.amqpURL, e.storeURL, e.ns, os.Getenv("EVENTSYNC_E2E_THROTTLE") != "0", e.api.URL)
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

func dropSchema(t *testing.T, dsn, schema string) {
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
		t.Logf("cleanup: drop schema %s: %v", schema, err)
	}
}

func (e *resyncEnv) startWorkers(t *testing.T, n int, streams string) []*proc {
	procs := make([]*proc, n)
	for i := range procs {
		id := fmt.Sprintf("w%d", i)
		procs[i] = start(t, "worker-"+id, "worker", "--config", e.cfgPath, "--admin", "off", "--worker-id", id, "--streams", streams)
	}
	return procs
}

func (e *resyncEnv) resyncArgs(extra ...string) []string {
	return append([]string{"resync", "--config", e.cfgPath, "--source", e.sourceDSN,
		"--table", "listings", "--entity", "listing", "--key", "id"}, extra...)
}

// churn updates, deletes and inserts random rows until stop is closed,
// like the application does while a resync runs.
func (e *resyncEnv) churn(ctx context.Context, rows int, seed uint64, stop <-chan struct{}) (done chan struct{}, ops *atomic.Int64, errp *error) {
	done, ops, errp = make(chan struct{}), new(atomic.Int64), new(error)
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(seed, 11))
		next := int64(rows)
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
			var err error
			id := 1 + rng.Int64N(next)
			switch r := rng.IntN(10); {
			case r < 6:
				_, err = e.db.Exec(ctx, `UPDATE listings SET title = $2, price = price + 1 WHERE id = $1`, id, fmt.Sprintf("live %d", ops.Load()))
			case r < 8:
				_, err = e.db.Exec(ctx, `DELETE FROM listings WHERE id = $1`, id)
			default:
				next++
				_, err = e.db.Exec(ctx, `INSERT INTO listings VALUES ($1, $2, 7)`, next, fmt.Sprintf("new %d", next))
			}
			if err != nil {
				if ctx.Err() == nil {
					*errp = err
				}
				return
			}
			ops.Add(1)
		}
	}()
	return done, ops, errp
}

// verifyConverged runs "eventsync verify" until it reports convergence.
// When it never does, the failure says where the wrong keys' changes
// stopped: in the outbox, the bus, the state store or the API.
func (e *resyncEnv) verifyConverged(t *testing.T, ctx context.Context, within time.Duration) verifyReport {
	t.Helper()
	var rep verifyReport
	defer func() {
		if t.Failed() {
			e.diagnose(t, rep)
		}
	}()
	waitFor(t, within, "eventsync verify to report convergence", func() error {
		out, err := run(t, ctx, "verify", "--source", e.sourceDSN, "--table", "listings", "--entity", "listing", "--key", "id", "--fakeapi", e.api.URL, "--json")
		start := strings.Index(out, "{")
		if start < 0 {
			return fmt.Errorf("verify printed no report (%v): %s", err, out)
		}
		rep = verifyReport{}
		if jerr := json.Unmarshal([]byte(out[start:]), &rep); jerr != nil {
			return fmt.Errorf("verify output: %v: %s", jerr, out)
		}
		if !rep.Converged || err != nil {
			time.Sleep(2 * time.Second)
			var samples bytes.Buffer
			_ = json.Compact(&samples, rep.Samples)
			return fmt.Errorf("not converged (%v): %+v; samples %s", err, rep.Counts, samples.String())
		}
		return nil
	})
	return rep
}

// diagnose logs, for the keys verify sampled as wrong, their outbox rows,
// their state-store rows and the bus's and the API's counters.
func (e *resyncEnv) diagnose(t *testing.T, rep verifyReport) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var samples struct {
		Missing, Extra, Differing []struct {
			Key     string `json:"key"`
			Version int64  `json:"version"`
		}
	}
	_ = json.Unmarshal(rep.Samples, &samples)
	var keys []string
	for _, group := range [][]struct {
		Key     string `json:"key"`
		Version int64  `json:"version"`
	}{samples.Missing, samples.Extra, samples.Differing} {
		for i, s := range group {
			if i < 4 {
				keys = append(keys, s.Key)
			}
		}
	}
	for _, s := range []bus.Stream{bus.Live, bus.Resync} {
		st, err := e.bus.Stats(ctx, s)
		t.Logf("diagnose: bus %s: %+v %v", s, st, err)
	}
	parked, err := e.bus.ListParked(ctx, bus.ParkedFilter{})
	t.Logf("diagnose: %d parked (%v)", len(parked), err)
	for i, p := range parked {
		if i < 5 {
			t.Logf("diagnose: parked %+v", p)
		}
	}
	st := e.api.Stats()
	t.Logf("diagnose: fake API: records=%v stale_writes=%d duplicates=%d overlapping=%d faults=%v requests=%v", st.Records, st.StaleWrites, st.DuplicateRecords, st.OverlappingWrites, st.FaultsInjected, st.Requests)
	if hb, err := control.Workers(ctx, e.store); err == nil {
		for _, h := range hb {
			t.Logf("diagnose: heartbeat %+v", h)
		}
	}
	query := func(db interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	}, what, sql string) {
		rows, err := db.Query(ctx, sql, keys)
		if err != nil {
			t.Logf("diagnose: %s: %v", what, err)
			return
		}
		defer rows.Close()
		for rows.Next() {
			vals, _ := rows.Values()
			t.Logf("diagnose: %s %v", what, vals)
		}
	}
	query(e.db, "source row", `SELECT id::text, eventsync_version, title, price FROM listings WHERE id::text = ANY($1) ORDER BY id`)
	query(e.db, "outbox row", `SELECT key, id, version, op, sent_at IS NOT NULL AS sent, created_at FROM eventsync_outbox WHERE key = ANY($1) ORDER BY key, id`)
	query(e.store.Pool(), "store row", `SELECT key, applied_version, remote_id, deleted, lease_owner, lease_expires, intent_version, repair_needed FROM `+
		pgx.Identifier{e.ns, "state"}.Sanitize()+` WHERE entity = 'listing' AND key = ANY($1) ORDER BY key`)
}

type verifyReport struct {
	Converged bool `json:"converged"`
	Counts    struct {
		Expected   int64 `json:"expected"`
		Remote     int64 `json:"remote"`
		Matching   int64 `json:"matching"`
		Missing    int64 `json:"missing"`
		Extra      int64 `json:"extra"`
		Differing  int64 `json:"differing"`
		Duplicated int64 `json:"duplicated"`
	} `json:"counts"`
	// Samples stays raw: it is only printed, to say which keys are wrong.
	Samples json.RawMessage `json:"samples"`
}

// TestResyncConvergesWithLiveChanges is the main Done-when: a
// table resynced while the application keeps updating, deleting and
// inserting random rows, once with live paused and once with both streams
// running, converges with no duplicate and no stale record left standing.
func TestResyncConvergesWithLiveChanges(t *testing.T) {
	for _, mode := range []string{"pause-live", "concurrent"} {
		t.Run(mode, func(t *testing.T) { testResyncConverges(t, mode == "pause-live") })
	}
}

func testResyncConverges(t *testing.T, pauseLive bool) {
	rows := resyncRows()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// Half a percent of the writes land but answer after the sink's 2 s
	// deadline: while such a write's outcome is unknown, an older event of
	// the key (a snapshot event behind a live change) must not be written.
	e := newResyncEnv(t, ctx, rows, fakeapi.Faults{
		Latency: fakeapi.Duration(time.Millisecond), Jitter: fakeapi.Duration(2 * time.Millisecond), ErrorRate: 0.01,
		TimeoutRate: 0.005, TimeoutHold: fakeapi.Duration(3 * time.Second),
	})
	start(t, "relay", "relay", "--config", e.cfgPath, "--source", e.sourceDSN, "--metrics-addr", "", "--concurrency", "2")
	workers := e.startWorkers(t, 3, "live,resync")

	stopChurn := make(chan struct{})
	churnDone, ops, churnErr := e.churn(ctx, rows, uint64(time.Now().UnixNano()), stopChurn)
	time.Sleep(time.Second) // live traffic before the resync starts

	args := e.resyncArgs("--page-size", "1000", "--log-level", "info")
	if pauseLive {
		args = append(args, "--pause-live")
	}
	resyncProc := start(t, "resync", args...)

	// Watch the live stream while the resync runs: paused means no
	// consumer and a growing backlog.
	var sawPaused, sawBacklog, sawLiveConsumers atomic.Bool
	stopWatch, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		var pausedSince time.Time
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(300 * time.Millisecond):
			}
			p, _ := control.Paused(ctx, e.store, bus.Live)
			if p == nil || !strings.HasPrefix(p.Reason, "resync ") {
				continue
			}
			sawPaused.Store(true)
			if pausedSince.IsZero() {
				pausedSince = time.Now()
			}
			if st, err := e.bus.Stats(ctx, bus.Live); err == nil {
				if st.Ready > 0 {
					sawBacklog.Store(true)
				}
				// Workers read the flag every 500ms; 3s is ample even here.
				if st.Consumers > 0 && time.Since(pausedSince) > 3*time.Second {
					sawLiveConsumers.Store(true)
				}
			}
		}
	}()
	var resyncErr error
	select {
	case resyncErr = <-resyncProc.done:
		resyncProc.done <- resyncErr
	case <-ctx.Done():
		t.Fatal("resync did not finish in time")
	}
	close(stopWatch)
	<-watchDone
	if resyncErr != nil {
		t.Fatalf("resync failed: %v\n%s", resyncErr, tail(resyncProc.log, 3000))
	}
	t.Logf("resync output:\n%s", grepLines(tail(resyncProc.log, 20000), "paused", "snapshot published", "drained", "resumed", "published "))
	if pauseLive {
		if !sawPaused.Load() || !sawBacklog.Load() || sawLiveConsumers.Load() {
			t.Errorf("during --pause-live: paused seen %v, live backlog seen %v, live consumers seen %v; want paused with a backlog and no consumer",
				sawPaused.Load(), sawBacklog.Load(), sawLiveConsumers.Load())
		}
		if p, _ := control.Paused(ctx, e.store, bus.Live); p != nil {
			t.Errorf("live still paused after the resync: %+v", p)
		}
		// Returning means drained: nothing of the resync stream is left.
		if st, err := e.bus.Stats(ctx, bus.Resync); err != nil || st.Ready != 0 || st.Delayed != 0 {
			t.Errorf("resync stream after --pause-live returned: %+v %v", st, err)
		}
	}

	time.Sleep(2 * time.Second) // live changes after the resync too
	close(stopChurn)
	<-churnDone
	if *churnErr != nil {
		t.Fatalf("live churn: %v", *churnErr)
	}
	t.Logf("%d live changes (updates, deletes, inserts) during the run", ops.Load())

	rep := e.verifyConverged(t, ctx, 5*time.Minute)
	t.Logf("verify: %+v", rep.Counts)
	if rep.Counts.Differing != 0 || rep.Counts.Duplicated != 0 || rep.Counts.Expected < int64(rows)/2 {
		t.Errorf("verify counts %+v", rep.Counts)
	}
	st := e.api.Stats()
	t.Logf("fake API: records=%v stale_writes=%d duplicates=%d overlapping=%d faults=%v", st.Records, st.StaleWrites, st.DuplicateRecords, st.OverlappingWrites, st.FaultsInjected)
	if st.DuplicateRecords != 0 {
		t.Errorf("fake API reports %d duplicate records", st.DuplicateRecords)
	}
	if st.OverlappingWrites != 0 {
		t.Errorf("fake API reports %d overlapping writes on one entity", st.OverlappingWrites)
	}
	// An older event written while a newer write's outcome was unknown
	// regresses the record until the newer one's retry lands.
	if st.StaleWrites != 0 {
		t.Errorf("fake API reports %d stale writes (a record's version went down)", st.StaleWrites)
	}
	parked, err := e.bus.ListParked(ctx, bus.ParkedFilter{})
	if err != nil || len(parked) != 0 {
		t.Errorf("parked messages: %d (%v), want none", len(parked), err)
	}
	for _, w := range workers {
		w.stop(t, 20*time.Second)
	}
}

// grepLines returns the lines of s that contain any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestResyncResumesAfterSIGKILL kills the resync at about half way and runs
// the same command again: it continues from the checkpoint, and the events
// published over both processes are at most the rows plus one page.
func TestResyncResumesAfterSIGKILL(t *testing.T) {
	rows := resyncRows()
	const page = 250
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newResyncEnv(t, ctx, rows, fakeapi.Faults{})
	runID := "kill-test"
	args := e.resyncArgs("--page-size", strconv.Itoa(page), "--run-id", runID)

	p := start(t, "resync-1", args...)
	var killedAt resync.Checkpoint
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cp, ok, err := resync.LoadCheckpoint(ctx, e.store, runID)
		if err != nil {
			t.Fatal(err)
		}
		if ok && cp.Rows >= int64(rows/2) {
			p.kill()
			killedAt = cp
			break
		}
		select {
		case err := <-p.done:
			t.Fatalf("resync exited (%v) before half way; log:\n%s", err, tail(p.log, 2000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("resync did not reach half way")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cp, _, err := resync.LoadCheckpoint(ctx, e.store, runID)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Done || cp.Rows >= int64(rows) {
		t.Fatalf("checkpoint after SIGKILL %+v: the run should be unfinished", cp)
	}
	t.Logf("SIGKILLed at %d of %d rows (checkpoint: %d rows, last key %s)", killedAt.Rows, rows, cp.Rows, cp.LastKey)

	out, err := run(t, ctx, args...)
	if err != nil {
		t.Fatalf("second resync: %v\n%s", err, out)
	}
	if !strings.Contains(out, fmt.Sprintf("resumed after key %q", cp.LastKey)) {
		t.Errorf("second run did not say it resumed after key %s:\n%s", cp.LastKey, out)
	}
	final, _, err := resync.LoadCheckpoint(ctx, e.store, runID)
	if err != nil {
		t.Fatal(err)
	}
	if !final.Done || final.Rows != int64(rows) || final.Segments != 2 {
		t.Errorf("final checkpoint %+v, want done with %d rows in 2 segments", final, rows)
	}

	// No worker consumed the resync stream: its queue holds exactly what
	// both processes published.
	st, err := e.bus.Stats(ctx, bus.Resync)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("published %d events for %d rows (page %d)", st.Ready, rows, page)
	if st.Ready > int64(rows+page) || st.Ready < int64(rows) {
		t.Errorf("published %d events for %d rows; want between rows and rows + one page (%d)", st.Ready, rows, rows+page)
	}
	keys := consumeKeys(t, ctx, e.bus, int(st.Ready))
	if len(keys) != rows {
		t.Errorf("%d distinct keys published, want %d", len(keys), rows)
	}
}

// consumeKeys drains n messages of the resync stream and returns the
// distinct keys.
func consumeKeys(t *testing.T, ctx context.Context, b bus.Bus, n int) map[string]bool {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := b.Subscribe(sctx, bus.Resync, bus.SubscribeOptions{Prefetch: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	keys := map[string]bool{}
	for range n {
		select {
		case d := <-sub.Deliveries():
			ev, err := event.Parse(d.Body(), 0)
			if err != nil {
				t.Fatalf("invalid resync event: %v", err)
			}
			keys[ev.Key] = true
			_ = d.Ack(sctx)
		case <-time.After(10 * time.Second):
			t.Fatalf("resync stream ran dry after %d keys", len(keys))
		}
	}
	return keys
}

// TestPauseLiveAcrossWorkerProcesses pauses the live stream with
// "eventsync ctl pause" while several worker processes consume it: they all
// stop pulling, events published meanwhile wait in the queue, and after
// "ctl resume" every one of them is applied.
func TestPauseLiveAcrossWorkerProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newResyncEnv(t, ctx, 0, fakeapi.Faults{Latency: fakeapi.Duration(time.Millisecond)})
	const workers = 4
	e.startWorkers(t, workers, "live")
	ctl := func(args ...string) {
		t.Helper()
		out, err := run(t, ctx, append(append([]string{"ctl"}, args...), "--config", e.cfgPath)...)
		if err != nil {
			t.Fatalf("eventsync ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	consumers := func() int {
		st, err := e.bus.Stats(ctx, bus.Live)
		if err != nil {
			t.Fatal(err)
		}
		return st.Consumers
	}
	waitFor(t, 30*time.Second, "every worker consuming live", func() error {
		ws, err := control.Workers(ctx, e.store)
		if err != nil {
			return err
		}
		n := 0
		for _, w := range ws {
			if w.Consuming[bus.Live] {
				n++
			}
		}
		if n != workers || consumers() != workers {
			return fmt.Errorf("%d heartbeats consuming, %d queue consumers", n, consumers())
		}
		return nil
	})

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	msgs, final := chaosEvents(rng, 200)
	publish := func(part [][]byte) {
		for len(part) > 0 {
			n := min(250, len(part))
			batch := make([]bus.Message, n)
			for i := range batch {
				batch[i] = bus.Message{Body: part[i]}
			}
			if err := e.bus.Publish(ctx, bus.Live, batch...); err != nil {
				t.Fatal(err)
			}
			part = part[n:]
		}
	}
	half := len(msgs) / 2
	publish(msgs[:half])

	paused := time.Now()
	ctl("pause", "--stream", "live", "--reason", "e2e")
	for n := consumers(); n != 0; n = consumers() {
		if time.Since(paused) > 10*time.Second {
			t.Fatalf("%d workers still consume live 10s after ctl pause", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("all %d workers stopped pulling live %s after ctl pause returned", workers, time.Since(paused).Round(10*time.Millisecond))
	waitFor(t, 10*time.Second, "heartbeats saying no worker consumes live", func() error {
		ws, err := control.Workers(ctx, e.store)
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.Consuming[bus.Live] || w.InFlight[bus.Live] != 0 {
				return fmt.Errorf("worker %s consuming=%v in flight=%d", w.ID, w.Consuming[bus.Live], w.InFlight[bus.Live])
			}
		}
		return nil
	})
	// Let any delayed retries of the first half come back: they wait too.
	before := e.api.Stats().Requests
	publish(msgs[half:])
	time.Sleep(3 * time.Second)
	st, err := e.bus.Stats(ctx, bus.Live)
	if err != nil {
		t.Fatal(err)
	}
	if st.Ready < int64(len(msgs)-half) || st.Consumers != 0 {
		t.Errorf("while paused: ready=%d consumers=%d, want the %d new events waiting and no consumer", st.Ready, st.Consumers, len(msgs)-half)
	}
	if after := e.api.Stats().Requests; fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the API was called while live was paused: %v then %v", before, after)
	}

	ctl("resume", "--stream", "live")
	waitFor(t, 2*time.Minute, "convergence after resume", func() error { return converged(e.api, final) })
	waitFor(t, 30*time.Second, "empty live queue", func() error {
		st, err := e.bus.Stats(ctx, bus.Live)
		if err != nil {
			return err
		}
		if st.Ready != 0 || st.Delayed != 0 || st.Consumers != workers {
			return fmt.Errorf("live ready=%d delayed=%d consumers=%d", st.Ready, st.Delayed, st.Consumers)
		}
		return nil
	})
	stats := e.api.Stats()
	if stats.DuplicateRecords != 0 {
		t.Errorf("duplicate remote records: %d", stats.DuplicateRecords)
	}
	if stats.OverlappingWrites != 0 {
		t.Errorf("overlapping writes on one entity: %d", stats.OverlappingWrites)
	}
	if stats.StaleWrites != 0 {
		t.Errorf("stale writes (a record's version went down): %d", stats.StaleWrites)
	}
	if parked, err := e.bus.ListParked(ctx, bus.ParkedFilter{}); err != nil || len(parked) != 0 {
		t.Errorf("parked: %d (%v), want none: nothing may be lost", len(parked), err)
	}
}

// TestResyncCommandDryRunAndErrors checks what an operator sees from the
// command itself: flag mistakes named with their fix, a dry run that says
// what would happen and publishes nothing, a NULL version refused with the
// fix, and delete-missing reporting before it deletes.
func TestResyncCommandDryRunAndErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := newResyncEnv(t, ctx, 1500, fakeapi.Faults{})

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"resync", "--config", e.cfgPath, "--source", e.sourceDSN, "--table", "listings"}, "missing --entity, --key"},
		{append(e.resyncArgs(), "--yes"), "--yes only confirms --delete-missing"},
		{append(e.resyncArgs(), "--dry-run", "--pause-live"), "--dry-run does not pause anything"},
		{e.resyncArgs("--where", "1=1; DROP TABLE listings"), "without ';'"},
		{e.resyncArgs("--version-col", "nope"), "nope"},
	} {
		out, err := run(t, ctx, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("eventsync %s: %v, output %q; want a failure mentioning %q", strings.Join(c.args[5:], " "), err, out, c.want)
		}
	}

	// A store entry for a key the table never had: delete-missing finds it.
	commitState(t, ctx, e, "ghost", 3)
	out, err := run(t, ctx, e.resyncArgs("--dry-run", "--delete-missing")...)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	for _, want := range []string{"would publish 1500 upsert events (2 pages)", "nothing published", "1 entities known to the store are not in listings", "ghost"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if st, err := e.bus.Stats(ctx, bus.Resync); err != nil || st.Ready != 0 {
		t.Errorf("dry run published: %+v %v", st, err)
	}

	out, err = run(t, ctx, e.resyncArgs("--delete-missing", "--yes", "--json")...)
	if err != nil {
		t.Fatalf("resync --delete-missing --yes: %v\n%s", err, out)
	}
	var res resync.Result
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out)
	}
	if !res.Done || res.SegmentRows != 1500 || res.Missing == nil || res.Missing.Published != 1 {
		t.Errorf("result %+v (missing %+v), want 1500 upserts and one delete", res, res.Missing)
	}
	if st, err := e.bus.Stats(ctx, bus.Resync); err != nil || st.Ready != 1501 {
		t.Errorf("resync queue %+v %v, want 1501 events", st, err)
	}

	if _, err := e.db.Exec(ctx, `ALTER TABLE listings ADD COLUMN rev bigint`); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, ctx, e.resyncArgs("--version-col", "rev")...)
	if err == nil || !strings.Contains(out, "install-trigger") || !strings.Contains(out, "--version-col") {
		t.Errorf("NULL versions: %v\n%s", err, out)
	}
}

// commitState records an applied upsert for key in the deployment's store,
// as a worker would have.
func commitState(t *testing.T, ctx context.Context, e *resyncEnv, key string, version int64) {
	t.Helper()
	k := store.Key{Entity: "listing", Key: key}
	l, _, err := e.store.Acquire(ctx, k, "test", time.Minute, version)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Commit(ctx, l, store.Commit{Version: version, RemoteID: "r-" + key}); err != nil {
		t.Fatal(err)
	}
}
