package relay_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/sqlite"
	"github.com/eventsync/eventsync/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// recorder is a bus.Publisher that keeps what it was given and can be
// told to fail, standing in for a broker in tests of the relay's own logic.
type recorder struct {
	mu      sync.Mutex
	got     []event.Event
	streams map[bus.Stream]int
	failing bool
	calls   int
}

func (r *recorder) Publish(ctx context.Context, stream bus.Stream, msgs ...bus.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.failing {
		return errors.New("broker unreachable")
	}
	if r.streams == nil {
		r.streams = map[bus.Stream]int{}
	}
	for _, m := range msgs {
		ev, err := event.Parse(m.Body, 0)
		if err != nil {
			return err
		}
		r.got = append(r.got, ev)
		r.streams[stream]++
	}
	return nil
}

func (r *recorder) setFailing(f bool) {
	r.mu.Lock()
	r.failing = f
	r.mu.Unlock()
}

func (r *recorder) events() []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event.Event(nil), r.got...)
}

func newSQLite(t *testing.T) *sqlite.Source {
	t.Helper()
	src, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	ctx := context.Background()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DB().Exec(`CREATE TABLE listings (id INTEGER PRIMARY KEY, name TEXT, secret TEXT)`); err != nil {
		t.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}}); err != nil {
		t.Fatal(err)
	}
	return src
}

func insert(t *testing.T, src *sqlite.Source, from, to int) {
	t.Helper()
	tx, err := src.DB().Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i <= to; i++ {
		if _, err := tx.Exec(`INSERT INTO listings (id, name, secret) VALUES (?, 'n', 's')`, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// start runs the relay until the test ends and checks Run's result.
func start(t *testing.T, r *relay.Relay) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func TestRelayPublishesEveryRowOnceAndMarksSent(t *testing.T) {
	t.Parallel()
	src := newSQLite(t)
	insert(t, src, 1, 450)
	pub := &recorder{}
	reg := prometheus.NewRegistry()
	r, err := relay.New(src, pub, relay.Config{BatchSize: 100, Concurrency: 2, PollInterval: 50 * time.Millisecond, Registerer: reg, Logger: quiet, BacklogInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, r)
	waitFor(t, "450 events", func() bool { return len(pub.events()) >= 450 })
	// Rows written while the relay runs are picked up too.
	insert(t, src, 2000, 2009)
	waitFor(t, "460 events", func() bool { return len(pub.events()) >= 460 })
	waitFor(t, "empty backlog", func() bool { return r.Stats().Backlog == 0 && r.Stats().Lag == 0 })
	stop()

	seen := map[string]int{}
	for _, ev := range pub.events() {
		seen[ev.ID]++
		if ev.Entity != "listing" || ev.Op != event.OpUpsert || !strings.HasPrefix(ev.ID, "outbox-") {
			t.Fatalf("unexpected event %+v", ev)
		}
		var data map[string]any
		if err := json.Unmarshal(ev.Data, &data); err != nil || data["secret"] != nil {
			t.Fatalf("event data %s: excluded column leaked or not JSON (%v)", ev.Data, err)
		}
	}
	if len(seen) != 460 {
		t.Fatalf("%d distinct events, want 460", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s published %d times without any failure", id, n)
		}
	}
	if pub.streams[bus.Live] != 460 {
		t.Fatalf("published to streams %v, want all 460 on live", pub.streams)
	}
	s := r.Stats()
	if s.Published != 460 || s.Errors != 0 || s.Batches < 5 {
		t.Fatalf("stats %+v", s)
	}
	if got := metricValue(t, reg, "eventsync_relay_published_total"); got != 460 {
		t.Fatalf("eventsync_relay_published_total = %v, want 460", got)
	}
	bl, err := src.Backlog(context.Background())
	if err != nil || bl.Rows != 0 {
		t.Fatalf("outbox backlog after relay: %+v %v", bl, err)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.Gauge != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// A broker outage makes rows accumulate and be published once it is back.
func TestRelayBrokerOutageLosesNothing(t *testing.T) {
	t.Parallel()
	src := newSQLite(t)
	pub := &recorder{failing: true}
	r, err := relay.New(src, pub, relay.Config{BatchSize: 50, Concurrency: 1, PollInterval: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Logger: quiet, BacklogInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, r)
	insert(t, src, 1, 300)
	waitFor(t, "failed publishes", func() bool { return r.Stats().Errors >= 3 })
	waitFor(t, "backlog measured", func() bool { return r.Stats().Backlog == 300 && r.Stats().Lag > 0 })
	if n := len(pub.events()); n != 0 {
		t.Fatalf("%d events recorded while failing", n)
	}
	insert(t, src, 301, 400)
	pub.setFailing(false)
	waitFor(t, "400 events after recovery", func() bool { return len(pub.events()) >= 400 })
	waitFor(t, "backlog drained", func() bool { return r.Stats().Backlog == 0 })
	keys := map[string]bool{}
	for _, ev := range pub.events() {
		keys[ev.Key] = true
	}
	if len(keys) != 400 {
		t.Fatalf("%d distinct keys published, want 400", len(keys))
	}
}

// An invalid row written by an application is published anyway (the worker
// parks it with the reason) and counted, never silently dropped.
func TestRelayPublishesInvalidRowsAndCountsThem(t *testing.T) {
	t.Parallel()
	src := newSQLite(t)
	if _, err := src.DB().Exec(`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('Bad Entity', 'k', 0, 'upsert', '{}')`); err != nil {
		t.Fatal(err)
	}
	pub := &parseless{}
	r, err := relay.New(src, pub, relay.Config{PollInterval: 20 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, r)
	waitFor(t, "the invalid row published", func() bool { return r.Stats().Published == 1 })
	stop()
	if r.Stats().Invalid != 1 || pub.n() != 1 {
		t.Fatalf("stats %+v, published %d; want 1 invalid row published", r.Stats(), pub.n())
	}
}

type parseless struct {
	mu    sync.Mutex
	count int
}

func (p *parseless) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count += len(msgs)
	return nil
}

func (p *parseless) n() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	src := newSQLite(t)
	if _, err := relay.New(nil, &recorder{}, relay.Config{}); err == nil {
		t.Error("New without a source succeeded")
	}
	if _, err := relay.New(src, &recorder{}, relay.Config{BatchSize: 1_000_000}); err == nil || !strings.Contains(err.Error(), "batch size") || setting.Key(err) != "relay.batch_size" {
		t.Errorf("huge batch size: %v, want an error about the batch size setting", err)
	}
	if _, err := relay.New(src, &recorder{}, relay.Config{PollInterval: time.Microsecond}); err == nil {
		t.Error("tiny poll interval accepted")
	}
	if _, err := relay.New(src, &recorder{}, relay.Config{MaxEventBytes: 10}); err == nil {
		t.Error("a 10-byte event limit accepted")
	}
	reg := prometheus.NewRegistry()
	if _, err := relay.New(src, &recorder{}, relay.Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.New(src, &recorder{}, relay.Config{Registerer: reg}); err == nil {
		t.Error("registering the relay's metrics twice on one registry succeeded")
	}
}

// oddRow is an outbox row an application wrote that is no valid event, and
// what the reason it is parked with must say about it.
type oddRow struct {
	insert string
	want   string
}

// sqliteOddRows covers what SQLite lets an application store: each row
// failed its batch before, again at every claim, and the rows behind it
// waited for good.
var sqliteOddRows = []oddRow{
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'a', 100, 'upsert', 'not json')`,
		"data 'not json' is not JSON"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'b', 'abc', 'upsert', '{}')`,
		"version 'abc' is text, not an integer"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'c', 100, 'upsert', '{}', 'yesterday')`,
		"occurred_at 'yesterday' is not a time"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', CAST(x'ff' AS TEXT), 100, 'upsert', '{}')`,
		"key x'FF' is not UTF-8 text"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'e', 100, 'upsert', '{"s":"' || printf('%.*c', 1100000, 'x') || '"}')`,
		"over the 1048576-byte limit"},
	{`INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('Bad Entity', 'f', 0, 'upsert', '[1]')`,
		"entity 'Bad Entity' does not match"},
}

// TestRelayParksOddRowsAndRelaysTheRowsBehindThem interleaves rows that are
// no valid event with good ones: every good row is published as its event,
// in id order; every odd one is published as a message the worker's own
// code parks at once with a reason naming the row, and the outbox drains.
// The publisher refuses messages over 1 MiB as NATS does by default.
func TestRelayParksOddRowsAndRelaysTheRowsBehindThem(t *testing.T) {
	t.Parallel()
	src := newSQLite(t)
	exec := func(q string) {
		t.Helper()
		if _, err := src.DB().Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	insert(t, src, 1, 3)
	for i, o := range sqliteOddRows {
		exec(o.insert)
		insert(t, src, 10*(i+1), 10*(i+1)+2)
	}
	pub := &broker{maxBody: 1 << 20}
	r, err := relay.New(src, pub, relay.Config{BatchSize: 4, Concurrency: 1, PollInterval: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, r)
	total := 3 + 4*len(sqliteOddRows)
	waitFor(t, fmt.Sprintf("all %d outbox rows published", total), func() bool { return r.Stats().Published == uint64(total) })
	stop()
	checkParkedAndRelayed(t, outboxRows(t, src.DB()), pub.bodies(), sqliteOddRows)
	if s := r.Stats(); s.Invalid != uint64(len(sqliteOddRows)) {
		t.Errorf("stats %+v, want %d invalid rows", s, len(sqliteOddRows))
	}
	if n := backlog(t, src); n != 0 {
		t.Errorf("%d rows left unsent", n)
	}
}

// outboxRow is an outbox row's id and whether it is a good row: a listing
// with a key and data as the listings trigger writes it.
type outboxRow struct {
	id   int64
	good bool
}

func outboxRows(t *testing.T, db *sql.DB) []outboxRow {
	t.Helper()
	rows, err := db.Query(`SELECT id, entity = 'listing' AND key <> '' AND coalesce(CAST(data AS TEXT), '') LIKE '{"id":%' FROM eventsync_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.good); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkParkedAndRelayed checks the published bodies, in publish order,
// against the outbox: one message per row, in id order; a good row's is its
// valid event; an odd row's is parked by the worker's own code (an Applier
// whose store and sink fail the test if touched) with a reason naming the
// row and saying what the matching oddRow wants. It returns the reasons by
// outbox id.
func checkParkedAndRelayed(t *testing.T, outbox []outboxRow, bodies [][]byte, odd []oddRow) map[int64]string {
	t.Helper()
	if len(bodies) != len(outbox) {
		t.Fatalf("%d messages published for %d outbox rows", len(bodies), len(outbox))
	}
	applier, err := engine.NewApplier(untouchedStore{}, untouchedSink{}, engine.Config{WorkerID: "relay-test", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[int64]string{}
	oddSeen := 0
	for i, row := range outbox {
		body := bodies[i]
		if row.good {
			ev, err := event.Parse(body, 0)
			if err != nil || ev.ID != fmt.Sprintf("outbox-%d", row.id) {
				t.Errorf("message %d: want the event of outbox row %d, got %s (%v)", i, row.id, body, err)
			}
			continue
		}
		out := workerOutcome(t, applier, body)
		want := fmt.Sprintf("outbox row %d (", row.id)
		if out.Result != engine.ResultParked || !strings.Contains(out.Reason, want) {
			t.Errorf("message %d: the worker's outcome for %s is %s %q; want parked with a reason naming %q", i, body, out.Result, out.Reason, want)
			continue
		}
		if oddSeen < len(odd) && !strings.Contains(out.Reason, odd[oddSeen].want) {
			t.Errorf("outbox row %d (%s) parked with %q; want it to say %q", row.id, odd[oddSeen].insert, out.Reason, odd[oddSeen].want)
		}
		oddSeen++
		reasons[row.id] = out.Reason
	}
	if oddSeen != len(odd) {
		t.Errorf("%d odd rows in the outbox, want %d", oddSeen, len(odd))
	}
	return reasons
}

// workerOutcome is what the worker decides for one message body.
func workerOutcome(t *testing.T, a *engine.Applier, body []byte) (out engine.Outcome) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("the worker called the store or the sink for %s, which it must park unread: %v", body, p)
		}
	}()
	return a.Apply(context.Background(), body, 1)
}

// untouchedStore and untouchedSink stand in for a worker's store and sink
// where none may be called: every method is the nil interface's, so a
// call panics and workerOutcome fails the test.
type untouchedStore struct{ store.Store }

type untouchedSink struct{ sink.Sink }

// broker is a publisher that keeps every body in order and, like a broker
// with a message size limit, refuses a batch holding a larger message.
type broker struct {
	maxBody int
	mu      sync.Mutex
	got     [][]byte
}

func (b *broker) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	for _, m := range msgs {
		if len(m.Body) > b.maxBody {
			return fmt.Errorf("message of %d bytes exceeds the maximum payload of %d", len(m.Body), b.maxBody)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range msgs {
		b.got = append(b.got, m.Body)
	}
	return nil
}

func (b *broker) bodies() [][]byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}
