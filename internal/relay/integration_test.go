package relay_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sourcetest"
)

// pgEnv is a PostgreSQL schema with the outbox installed and a captured
// listings table.
type pgEnv struct {
	dsn string
	src *postgres.Source
	db  *sql.DB
}

func newPG(t testing.TB) pgEnv {
	t.Helper()
	ctx := context.Background()
	dsn := sourcetest.PostgresDSN(t)
	src, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Logger: quiet, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(`CREATE TABLE listings (id bigint PRIMARY KEY, name text NOT NULL, price int NOT NULL DEFAULT 0, secret text)`); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	return pgEnv{dsn: dsn, src: src, db: db}
}

// collector consumes the live stream and keeps every event, acking each.
type collector struct {
	mu     sync.Mutex
	events []event.Event
	ids    map[string]bool // distinct event ids, kept as they arrive
	cancel context.CancelFunc
	done   chan struct{}
}

func collect(t *testing.T, b bus.Bus) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 500})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &collector{cancel: cancel, done: make(chan struct{}), ids: map[string]bool{}}
	go func() {
		defer close(c.done)
		for d := range sub.Deliveries() {
			ev, err := event.Parse(d.Body(), 0)
			if err != nil {
				t.Errorf("relay published an invalid event: %v: %s", err, d.Body())
			} else {
				c.mu.Lock()
				c.events = append(c.events, ev)
				c.ids[ev.ID] = true
				c.mu.Unlock()
			}
			_ = d.Ack(context.Background())
		}
	}()
	t.Cleanup(func() { c.stop(); _ = sub.Close() })
	return c
}

func (c *collector) stop() {
	c.cancel()
	<-c.done
}

func (c *collector) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

func (c *collector) snapshot() []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

type keyVersion struct {
	key     string
	version int64
}

// TestRelayConcurrentTransactions runs application transactions that update
// the same rows concurrently, some rolled back and some committing late
// (after transactions that started later), and checks that every committed
// version reaches RabbitMQ, nothing from a rolled-back transaction does, and
// the newest version of every key carries the row's final state.
func TestRelayConcurrentTransactions(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet})
	col := collect(t, b)
	const keys = 20
	for i := 1; i <= keys; i++ {
		if _, err := pg.db.Exec(`INSERT INTO listings (id, name) VALUES ($1, 'initial')`, i); err != nil {
			t.Fatal(err)
		}
	}
	r, err := relay.New(pg.src, b, relay.Config{BatchSize: 50, PollInterval: 100 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)

	var mu sync.Mutex
	committed := map[keyVersion]string{} // -> name written
	rolledBack := map[keyVersion]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for n := range 15 {
				ids := []int{1 + rng.IntN(keys), 1 + rng.IntN(keys)}
				slices.Sort(ids) // a fixed lock order avoids deadlocks
				ids = slices.Compact(ids)
				name := fmt.Sprintf("w%d-n%d", w, n)
				tx, err := pg.db.Begin()
				if err != nil {
					errs <- err
					return
				}
				var written []keyVersion
				for _, id := range ids {
					var v int64
					if err := tx.QueryRow(`UPDATE listings SET name = $2, price = price + 1 WHERE id = $1 RETURNING eventsync_version`, id, name).Scan(&v); err != nil {
						_ = tx.Rollback()
						errs <- err
						return
					}
					written = append(written, keyVersion{fmt.Sprint(id), v})
				}
				switch rng.IntN(5) {
				case 0: // rolled back
					if err := tx.Rollback(); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, kv := range written {
						rolledBack[kv] = true
					}
					mu.Unlock()
					continue
				case 1: // late: hold the locks while later ids commit elsewhere
					if _, err := tx.Exec(`SELECT pg_sleep(0.15)`); err != nil {
						_ = tx.Rollback()
						errs <- err
						return
					}
				}
				if err := tx.Commit(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for _, kv := range written {
					committed[kv] = name
				}
				mu.Unlock()
			}
		})
	}
	// Late commits of the classic kind: an outbox id allocated early whose
	// transaction commits after many later ids were already relayed.
	slow, err := pg.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Exec(`INSERT INTO listings (id, name) VALUES (999, 'slow')`); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("application transaction: %v", err)
	}
	waitFor(t, "the relay to drain the committed rows", func() bool { return r.Stats().Published > 0 && backlog(t, pg.src) == 0 })
	if err := slow.Commit(); err != nil {
		t.Fatal(err)
	}
	committedSlow := keyVersion{"999", 0}

	// Every committed version arrives.
	waitFor(t, "every committed version on the bus", func() bool {
		got := map[keyVersion]bool{}
		for _, ev := range col.snapshot() {
			got[keyVersion{ev.Key, ev.Version}] = true
			if ev.Key == "999" {
				committedSlow.version = ev.Version
			}
		}
		for kv := range committed {
			if !got[kv] {
				return false
			}
		}
		return committedSlow.version > 0
	})
	col.stop()
	events := col.snapshot()

	newest := map[string]event.Event{}
	for _, ev := range events {
		kv := keyVersion{ev.Key, ev.Version}
		if rolledBack[kv] {
			t.Fatalf("event %s/%s v%d comes from a rolled-back transaction", ev.Entity, ev.Key, ev.Version)
		}
		if name, ok := committed[kv]; ok {
			var d map[string]any
			if err := json.Unmarshal(ev.Data, &d); err != nil || d["name"] != name {
				t.Fatalf("event %s v%d has data %s, want name %q", ev.Key, ev.Version, ev.Data, name)
			}
			if _, leaked := d["secret"]; leaked {
				t.Fatalf("excluded column in %s", ev.Data)
			}
		}
		if ev.Version > newest[ev.Key].Version {
			newest[ev.Key] = ev
		}
	}
	// The newest version per key is the row's committed state.
	rows, err := pg.db.Query(`SELECT id::text, name, eventsync_version FROM listings`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var key, name string
		var version int64
		if err := rows.Scan(&key, &name, &version); err != nil {
			t.Fatal(err)
		}
		ev := newest[key]
		var d map[string]any
		_ = json.Unmarshal(ev.Data, &d)
		if ev.Version != version || d["name"] != name {
			t.Fatalf("key %s: newest event v%d %s, row is v%d name %q", key, ev.Version, ev.Data, version, name)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d committed versions, %d rolled back, %d events received", len(committed), len(rolledBack), len(events))
}

func backlog(t testing.TB, src source.Source) int64 {
	bl, err := src.Backlog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bl.Rows
}

// TestRelayBrokerConnectionClosed closes the relay's broker connection
// with rabbitmqctl while rows keep arriving: nothing is lost.
func TestRelayBrokerConnectionClosed(t *testing.T) {
	t.Parallel()
	ctl, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		if testenv.Required() {
			t.Fatal("rabbitmqctl is needed to cut the broker connection")
		}
		t.Skip("rabbitmqctl not found; it is needed to cut the broker connection")
	}
	pg := newPG(t)
	connName := testenv.UniqueName("relay-cut")
	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet, ConnectionName: connName})
	col := collect(t, rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet, Namespace: b.Namespace()}))
	r, err := relay.New(pg.src, b, relay.Config{BatchSize: 20, PollInterval: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)

	const total = 600
	inserted := make(chan struct{})
	go func() {
		defer close(inserted)
		for i := 1; i <= total; i++ {
			if _, err := pg.db.Exec(`INSERT INTO listings (id, name) VALUES ($1, 'n')`, i); err != nil {
				t.Errorf("insert: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	waitFor(t, "some events relayed", func() bool { return r.Stats().Published >= 50 })
	oldPID := closeConnection(t, ctl, connName)
	// The relay's bus connection comes back as a new broker connection.
	deadline := time.Now().Add(30 * time.Second)
	for pid := ""; pid == "" || pid == oldPID; pid = connectionPID(t, ctl, connName) {
		if time.Now().After(deadline) {
			t.Fatal("the relay's bus did not reconnect after the cut")
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-inserted
	waitFor(t, fmt.Sprintf("all %d keys on the bus", total), func() bool {
		keys := map[string]bool{}
		for _, ev := range col.snapshot() {
			keys[ev.Key] = true
		}
		return len(keys) == total
	})
	t.Logf("relay stats after the cut: %+v", r.Stats())
}

// connectionPID returns the broker's pid of the connection named name, or
// "" when there is none.
func connectionPID(t *testing.T, ctl, name string) string {
	t.Helper()
	out, err := exec.Command(ctl, "list_connections", "-q", "pid", "client_properties").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, name) {
			return strings.Fields(line)[0]
		}
	}
	return ""
}

// closeConnection closes the broker connection named name and returns its pid.
func closeConnection(t *testing.T, ctl, name string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if pid := connectionPID(t, ctl, name); pid != "" {
			if out, err := exec.Command(ctl, "close_connection", pid, "test cuts the relay's connection").CombinedOutput(); err != nil {
				t.Fatalf("rabbitmqctl close_connection: %v: %s", err, out)
			}
			return pid
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no RabbitMQ connection named %q found", name)
	return ""
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the eventsync command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "eventsync-relay-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "eventsync")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/eventsync")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{} // closed once the process is reaped; then err is set
	err    error
}

func startRelayProcess(t *testing.T, pgDSN, busURL, namespace string) *proc {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(binary(t), "relay", "--source", pgDSN, "--bus", busURL, "--namespace", namespace,
		"--batch-size", "100", "--poll-interval", "50ms", "--metrics-addr", "")
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "EVENTSYNC_CONFIG=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &stderr, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

func sentCount(t *testing.T, db *sql.DB) (sent, unsent int64) {
	t.Helper()
	if err := db.QueryRow(`SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE sent_at IS NULL) FROM eventsync_outbox`).Scan(&sent, &unsent); err != nil {
		t.Fatal(err)
	}
	return sent, unsent
}

// TestRelayProcessSIGKILL kills a real relay process mid-run and restarts
// it: every outbox row reaches the bus at least once.
func TestRelayProcessSIGKILL(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet})
	col := collect(t, b)
	const total = 4000
	if _, err := pg.db.Exec(`INSERT INTO listings (id, name, price) SELECT i, 'listing ' || i, i FROM generate_series(1, $1) i`, total); err != nil {
		t.Fatal(err)
	}
	busURL := testenv.RabbitMQ(t)

	first := startRelayProcess(t, pg.dsn, busURL, b.Namespace())
	waitFor(t, "the first relay to publish", func() bool { s, _ := sentCount(t, pg.db); return s >= 400 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	sent, unsent := sentCount(t, pg.db)
	if unsent == 0 {
		t.Fatalf("the relay finished all %d rows before SIGKILL; the test needs more rows", total)
	}
	t.Logf("killed with %d rows sent, %d unsent", sent, unsent)

	second := startRelayProcess(t, pg.dsn, busURL, b.Namespace())
	waitFor(t, "the restarted relay to drain the outbox", func() bool { _, u := sentCount(t, pg.db); return u == 0 })
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.exited:
		if second.err != nil {
			t.Fatalf("relay exited with %v after SIGTERM; stderr:\n%s", second.err, second.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("relay did not stop after SIGTERM")
	}

	// Every outbox row (and so every event id) reached the bus.
	var rowCount int
	if err := pg.db.QueryRow(`SELECT count(*) FROM eventsync_outbox`).Scan(&rowCount); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every outbox row on the bus", func() bool { return col.distinct() >= rowCount })
	ids := make([]int64, 0, rowCount)
	rows, err := pg.db.Query(`SELECT id FROM eventsync_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	_ = rows.Close()
	col.stop()
	col.mu.Lock()
	for _, id := range ids {
		if !col.ids[fmt.Sprintf("outbox-%d", id)] {
			t.Errorf("outbox row %d never reached the bus", id)
		}
	}
	col.mu.Unlock()
	t.Logf("%d rows, %d events received (duplicates, if any, come from the batch in flight at the kill)", len(ids), len(col.snapshot()))
}

// pgOddRows are rows PostgreSQL accepts that are no valid event. The
// 'infinity' ones failed every claim before (pgx cannot scan them into a
// time.Time), the year-10000 one every encode; either way the rows behind
// them waited for good.
var pgOddRows = []oddRow{
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'a', 100, 'upsert', '{}', 'infinity')`,
		"occurred_at 'infinity' is not a finite time"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'b', 100, 'upsert', '{}', '-infinity')`,
		"occurred_at '-infinity' is not a finite time"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'c', 100, 'upsert', '{}', '10000-01-01 00:00:00+00')`,
		"occurred_at 10000-01-01T00:00:00Z is outside the years 0000 to 9999"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'd', 100, 'upsert', jsonb_build_object('s', repeat('x', 1100000)))`,
		"over the 1048576-byte limit"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('Bad Entity', 'e', 0, 'upsert', '{}')`,
		"version 0 is below the minimum of 1"},
}

// TestRelayParksOddPostgresRowsOnRabbitMQ runs the whole path: rows that
// are no valid event, between good ones and beside one whose created_at
// is 'infinity' (not part of the event, so relayed as usual), go through
// the relay to RabbitMQ; a consumer settles each delivery as the worker
// does (the worker's Applier decides; parked messages go to the parked
// queue with its reason). Every good row arrives as its event in id order,
// every odd one is in the parked queue with a reason naming it, the outbox
// drains, and fixing an odd row and clearing its sent_at publishes it
// again, as docs/outbox.md says.
func TestRelayParksOddPostgresRowsOnRabbitMQ(t *testing.T) {
	t.Parallel()
	pg := newPG(t)
	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet})
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := pg.db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	insertListings := func(from, to int) {
		t.Helper()
		exec(`INSERT INTO listings (id, name) SELECT i, 'n' FROM generate_series($1::int, $2::int) i`, from, to)
	}
	insertListings(1, 3)
	exec(`INSERT INTO eventsync_outbox (entity, key, version, op, data, created_at) VALUES ('listing', '99', 100, 'upsert', '{"id": 99}', 'infinity')`)
	for i, o := range pgOddRows {
		exec(o.insert)
		insertListings(10*(i+1), 10*(i+1)+2)
	}
	outbox := outboxRows(t, pg.db)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	applier, err := engine.NewApplier(untouchedStore{}, untouchedSink{}, engine.Config{WorkerID: "relay-test", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// settle handles deliveries as the worker would until want messages
	// came, and returns their bodies in delivery order.
	settle := func(want int) [][]byte {
		t.Helper()
		var bodies [][]byte
		for len(bodies) < want {
			var d bus.Delivery
			select {
			case d = <-sub.Deliveries():
			case <-ctx.Done():
				t.Fatalf("%d of %d messages arrived before the deadline", len(bodies), want)
			}
			bodies = append(bodies, d.Body())
			if _, err := event.Parse(d.Body(), 0); err == nil {
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				continue
			}
			out := workerOutcome(t, applier, d.Body())
			if out.Result != engine.ResultParked {
				t.Fatalf("the worker's outcome for %s is %s, want parked", d.Body(), out.Result)
			}
			// A worker parks it with the header's reason as it is (the body
			// alone is parked too, by a worker that predates the header).
			if h := d.Headers()[bus.HeaderRejected]; !strings.HasPrefix(h, "outbox row ") {
				t.Fatalf("rejected message %s carries %s %q, want the reason naming its outbox row", d.Body(), bus.HeaderRejected, h)
			}
			if err := d.Park(ctx, out.Reason); err != nil {
				t.Fatal(err)
			}
		}
		return bodies
	}

	r, err := relay.New(pg.src, b, relay.Config{BatchSize: 4, Concurrency: 1, PollInterval: 50 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, r)
	bodies := settle(len(outbox))
	reasons := checkParkedAndRelayed(t, outbox, bodies, pgOddRows)
	waitFor(t, "the outbox drained", func() bool { return backlog(t, pg.src) == 0 })
	if s := r.Stats(); s.Invalid != uint64(len(pgOddRows)) {
		t.Errorf("stats %+v, want %d invalid rows", s, len(pgOddRows))
	}

	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != len(pgOddRows) {
		t.Fatalf("%d messages parked, want %d", len(parked), len(pgOddRows))
	}
	for _, p := range parked {
		found := false
		for id, reason := range reasons {
			found = found || (p.Reason == reason && strings.Contains(p.Reason, fmt.Sprintf("outbox row %d (", id)))
		}
		if !found {
			t.Errorf("parked message %s has reason %q, which names no odd outbox row", p.Body, p.Reason)
		}
	}
	// The parked copies keep the entity, so the usual filters find them.
	if byEntity, err := b.ListParked(ctx, bus.ParkedFilter{Entity: "listing"}); err != nil || len(byEntity) != len(pgOddRows)-1 {
		t.Errorf("parked messages of entity listing: %d (%v), want %d", len(byEntity), err, len(pgOddRows)-1)
	}

	// The documented fix: correct the row and clear its sent_at.
	var infinite int64
	if err := pg.db.QueryRow(`SELECT id FROM eventsync_outbox WHERE occurred_at = 'infinity'`).Scan(&infinite); err != nil {
		t.Fatal(err)
	}
	exec(`UPDATE eventsync_outbox SET occurred_at = now(), sent_at = NULL WHERE id = $1`, infinite)
	again := settle(1)
	stop()
	if ev, err := event.Parse(again[0], 0); err != nil || ev.ID != fmt.Sprintf("outbox-%d", infinite) || ev.OccurredAt == nil {
		t.Fatalf("after the fix the relay published %s (%v), want the event of outbox row %d", again[0], err, infinite)
	}
}
