package eventsync_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the example's application database

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/source"
)

// crm stands in for a Go sink of your own: an API that needs an SDK, OAuth
// tokens, a multi-step create or signed requests. It keeps its records in
// memory; a real one calls the API and returns *sink.Error for failures
// (sink.ClassifyStatus says which statuses may be retried).
type crm struct {
	mu      sync.Mutex
	nextID  int
	records map[string]crmRecord // by remote id
}

type crmRecord struct {
	entity, key string
	data        json.RawMessage
}

func newCRM() *crm { return &crm{records: map[string]crmRecord{}} }

func (c *crm) Create(_ context.Context, r sink.Record) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextID++
	id := "crm-" + strconv.Itoa(c.nextID)
	c.records[id] = crmRecord{entity: r.Entity, key: r.Key, data: r.Data}
	return id, nil
}

func (c *crm) Update(_ context.Context, remoteID string, r sink.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.records[remoteID]; !ok {
		return sink.ErrNotFound
	}
	c.records[remoteID] = crmRecord{entity: r.Entity, key: r.Key, data: r.Data}
	return nil
}

func (c *crm) Delete(_ context.Context, _, remoteID string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.records[remoteID]; !ok {
		return sink.ErrNotFound
	}
	delete(c.records, remoteID)
	return nil
}

func (c *crm) Lookup(_ context.Context, entity, key string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id, r := range c.records {
		if r.entity == entity && r.key == key {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// dump lists the records as entity/key data, sorted.
func (c *crm) dump() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, r := range c.records {
		out = append(out, fmt.Sprintf("%s/%s %s", r.entity, r.key, r.data))
	}
	slices.Sort(out)
	return out
}

// settled counts the deliveries a worker has finished for good.
func settled(w *eventsync.Worker) int64 {
	r := w.Status().Results
	return r["applied"] + r["duplicate"] + r["stale"] + r["superseded"] + r["repaired"] + r["parked"]
}

// waitFor polls cond until it holds or a minute passes.
func waitFor(what string, cond func() bool) error {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return fmt.Errorf("%s: not reached within a minute", what)
}

// A worker with a Go sink, on an embedded bus and store: events arrive
// duplicated, out of order and stale, and the API ends up with the newest
// state of each entity, written once.
func ExampleClient_NewWorker() {
	dir, err := os.MkdirTemp("", "eventsync-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	api := newCRM()
	client, err := eventsync.Open(eventsync.Config{DataDir: dir}, // an embedded deployment
		eventsync.WithSink(api),
		eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// What the application's outbox relay would publish, badly ordered.
	events := []event.Event{
		{ID: "e1", Entity: "contact", Key: "7", Version: 1, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Ada"}`)},
		{ID: "e3", Entity: "contact", Key: "7", Version: 3, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Ada Lovelace"}`)},
		{ID: "e2", Entity: "contact", Key: "7", Version: 2, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Ada L."}`)},
		{ID: "e3", Entity: "contact", Key: "7", Version: 3, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Ada Lovelace"}`)},
		{ID: "e4", Entity: "contact", Key: "8", Version: 1, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Grace"}`)},
		{ID: "e5", Entity: "contact", Key: "9", Version: 1, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"Edsger"}`)},
		{ID: "e6", Entity: "contact", Key: "9", Version: 2, Op: event.OpDelete},
	}
	b, err := client.Bus(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		body, err := ev.Marshal()
		if err != nil {
			log.Fatal(err)
		}
		if err := b.Publish(ctx, bus.Live, bus.Message{Body: body}); err != nil {
			log.Fatal(err)
		}
	}

	worker, err := client.NewWorker(ctx, eventsync.WithWorkerID("example"))
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	if err := waitFor("every event settled", func() bool { return settled(worker) == int64(len(events)) }); err != nil {
		log.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	for _, r := range api.dump() {
		fmt.Println(r)
	}
	// Output:
	// contact/7 {"name":"Ada Lovelace"}
	// contact/8 {"name":"Grace"}
}

// The application side from Go: an outbox trigger captures the changes of
// a table, a relay publishes them, a resync publishes the whole table again
// (as after restoring a backup), and a worker applies both streams. The
// resync's snapshot carries the rows' versions, so it cannot overwrite a
// newer live change.
func ExampleClient_NewResync() {
	dir, err := os.MkdirTemp("", "eventsync-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The application's database and its table.
	dbPath := filepath.Join(dir, "app.db")
	app, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	if err != nil {
		log.Fatal(err)
	}
	defer app.Close()
	if _, err := app.ExecContext(ctx, `CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	api := newCRM()
	client, err := eventsync.Open(eventsync.Config{DataDir: filepath.Join(dir, "deployment"), Source: "sqlite://" + dbPath},
		eventsync.WithSink(api),
		eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Install the outbox and the table's trigger, then change the table.
	src, err := client.Source(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := src.Install(ctx); err != nil {
		log.Fatal(err)
	}
	if err := src.InstallTrigger(ctx, source.TriggerSpec{Table: "products", Entity: "product", KeyColumn: "id"}); err != nil {
		log.Fatal(err)
	}
	for _, stmt := range []string{
		`INSERT INTO products (id, name, price) VALUES (1, 'kettle', 30), (2, 'toaster', 45), (3, 'lamp', 20)`,
		`UPDATE products SET price = 35 WHERE id = 1`,
		`DELETE FROM products WHERE id = 3`,
	} {
		if _, err := app.ExecContext(ctx, stmt); err != nil {
			log.Fatal(err)
		}
	}

	relay, err := client.NewRelay(ctx, eventsync.RelayConfig{PollInterval: 100 * time.Millisecond})
	if err != nil {
		log.Fatal(err)
	}
	worker, err := client.NewWorker(ctx, eventsync.WithWorkerID("example"))
	if err != nil {
		log.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, run := range []func(context.Context) error{relay.Run, worker.Run} {
		wg.Go(func() { errs <- run(ctx) })
	}
	// Five live changes: three inserts, an update, a delete.
	if err := waitFor("live changes applied", func() bool { return settled(worker) == 5 }); err != nil {
		log.Fatal(err)
	}

	resync, err := client.NewResync(eventsync.ResyncSpec{Table: "products", Entity: "product", KeyColumn: "id"}, eventsync.ResyncOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if err := resync.Run(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("resync published %d rows\n", resync.Result().Rows)
	// The two rows' snapshot events carry the versions already applied.
	if err := waitFor("resync events settled", func() bool { return settled(worker) == 7 }); err != nil {
		log.Fatal(err)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			log.Fatal(err)
		}
	}
	for _, r := range api.dump() {
		fmt.Println(r)
	}
	// Output:
	// resync published 2 rows
	// product/1 {"id":1,"name":"kettle","price":35}
	// product/2 {"id":2,"name":"toaster","price":45}
}
