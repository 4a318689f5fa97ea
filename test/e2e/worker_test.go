package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
	pgstore "github.com/eventsync/eventsync/store/postgres"
	redisstore "github.com/eventsync/eventsync/store/redis"
)

type finalState struct {
	version int64
	deleted bool
	title   string
}

// chaosEvents builds events for n entities with duplicates, deletes and
// re-creates, shuffled so stale versions arrive after newer ones.
func chaosEvents(rng *rand.Rand, entities int) (msgs [][]byte, final map[string]finalState) {
	final = map[string]finalState{}
	for e := 0; e < entities; e++ {
		key := fmt.Sprintf("L-%d", e)
		versions := 5 + rng.IntN(25)
		var last finalState
		for v := 1; v <= versions; v++ {
			var body []byte
			if rng.IntN(10) == 0 {
				body = []byte(fmt.Sprintf(`{"id":"d-%s-%d","entity":"listing","key":%q,"version":%d,"op":"delete"}`, key, v, key, v))
				last = finalState{version: int64(v), deleted: true}
			} else {
				title := fmt.Sprintf("%s v%d", key, v)
				body = []byte(fmt.Sprintf(`{"id":"u-%s-%d","entity":"listing","key":%q,"version":%d,"op":"upsert","data":{"title":%q,"price":%d}}`, key, v, key, v, title, v*10))
				last = finalState{version: int64(v), title: title}
			}
			msgs = append(msgs, body)
			if rng.IntN(10) == 0 { // duplicate delivery
				msgs = append(msgs, body)
			}
		}
		final[key] = last
	}
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	return msgs, final
}

// poison are messages a worker must park at once, with a reason.
var poison = map[string]string{
	`this is not json`: "not a JSON object",
	`{"id":"p1","entity":"listing","key":"x","op":"upsert","data":{}}`:               `"version": required`,
	`{"id":"p2","entity":"spaceship","key":"x","version":1,"op":"upsert","data":{}}`: `unknown entity type`,
	`{"id":"p3","entity":"listing","key":"x","version":"7","op":"upsert","data":{}}`: `not a string`,
	`{"id":"p4","entity":"listing","key":"x","version":1,"op":"merge","data":{}}`:    `"op"`,
	`{"id":"p5","entity":"listing","key":"","version":1,"op":"delete"}`:              `"key": must not be empty`,
}

func TestWorkersConvergeUnderChaos(t *testing.T) {
	for _, storeKind := range []string{"postgres", "redis"} {
		t.Run(storeKind, func(t *testing.T) {
			testWorkersConverge(t, storeKind, 0)
		})
	}
	// Per-key ordered mode (bus_partitions): the same chaos, a worker
	// killed while active on partitions, its standby taking over.
	t.Run("redis-ordered", func(t *testing.T) {
		testWorkersConverge(t, "redis", 8)
	})
}

func testWorkersConverge(t *testing.T, storeKind string, partitions int) {
	amqpURL := testenv.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const workers = 8
	var (
		storeURL string
		st       store.Store // the test's own handle, to read the workers' heartbeats
		err      error
	)
	ns := testenv.UniqueName("e2e")
	switch storeKind {
	case "postgres":
		// Eight processes share the suite's PostgreSQL: two connections
		// each (lease statements are batched) keep them at 16 in all.
		storeURL = testenv.PostgresPool(t, 2)
		t.Cleanup(func() { dropStoreSchema(t, testenv.Postgres(t), ns) })
		st, err = pgstore.Open(ctx, pgstore.Config{DSN: testenv.Postgres(t), Schema: ns, MaxConns: 1, Logger: quiet})
	case "redis":
		storeURL = testenv.Redis(t)
		t.Cleanup(func() { deleteRedisPrefix(t, storeURL, ns) })
		st, err = redisstore.Open(ctx, redisstore.Config{URL: storeURL, Prefix: ns, PoolSize: 2, Logger: quiet})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	var api *fakeapi.Running
	api, err = fakeapi.Start(ctx, fakeapi.Config{Seed: seed, Faults: fakeapi.Faults{
		Latency: fakeapi.Duration(2 * time.Millisecond), Jitter: fakeapi.Duration(8 * time.Millisecond),
		ErrorRate: 0.05, TimeoutRate: 0.02, TimeoutHold: fakeapi.Duration(1500 * time.Millisecond),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	b, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: amqpURL, Namespace: ns, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	defer deleteQueues(t, amqpURL, b)

	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf(`bus: %s
store: %s
namespace: %s
bus_partitions: %d
worker:
  concurrency: 32
  lease_ttl: 15s
  backoff_base: 200ms
  backoff_max: 3s
  max_attempts: 100
  max_event_bytes: 4096
  shutdown_grace: 5s
log:
  level: warn
sink:
  defaults:
    base_url: %s
    timeout: 1s
  entities:
    listing:
      collection: listings
`, amqpURL, storeURL, ns, partitions, api.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	msgs, final := chaosEvents(rng, 320)
	for body := range poison {
		msgs = append(msgs, []byte(body))
	}
	msgs = append(msgs, []byte(`{"id":"p6","entity":"listing","key":"x","version":1,"op":"upsert","data":{"blob":"`+strings.Repeat("x", 5000)+`"}}`))
	rng.Shuffle(len(msgs), func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	t.Logf("%d messages for %d entities", len(msgs), len(final))

	procs := make([]*proc, workers)
	for i := range procs {
		procs[i] = start(t, fmt.Sprintf("worker-%d", i), "worker", "--config", cfgPath, "--admin", "off", "--worker-id", fmt.Sprintf("w%d", i))
	}
	// Publish in batches while the workers run; kill one mid-run.
	half := len(msgs) / 2
	publish := func(part [][]byte) {
		for len(part) > 0 {
			n := min(250, len(part))
			batch := make([]bus.Message, n)
			for i := range batch {
				batch[i] = bus.Message{Body: part[i]}
			}
			if err := b.Publish(ctx, bus.Live, batch...); err != nil {
				t.Fatal(err)
			}
			part = part[n:]
		}
	}
	publish(msgs[:half])
	time.Sleep(2 * time.Second)
	procs[3].kill()
	t.Log("SIGKILLed worker 3 mid-run")
	publish(msgs[half:])
	time.Sleep(time.Second)
	procs[3] = start(t, "worker-3-restarted", "worker", "--config", cfgPath, "--admin", "off", "--worker-id", "w3b")

	waitFor(t, 3*time.Minute, "convergence", func() error { return converged(api, final) })
	// Converged is not done: a write that timed out after landing, or an
	// event that found its key leased by a duplicate's holder, may still be
	// retried. Wait until every retry came back and was settled and no
	// worker holds a delivery, then stop cleanly: nothing may be left behind.
	waitQuiet(t, ctx, 60*time.Second, b, st, bus.Live, workers, rabbitmq.DefaultRetryTiers[0])
	if hb, err := control.Workers(ctx, st); err == nil {
		sum := map[string]int64{}
		for _, w := range hb {
			for k, n := range w.Results {
				sum[k] += n
			}
		}
		t.Logf("bus_partitions %d: results of the workers running at the end (not the killed one): %v", partitions, sum)
	}
	for _, p := range procs {
		p.stop(t, 20*time.Second)
	}
	left, err := b.Stats(ctx, bus.Live)
	if err != nil {
		t.Fatal(err)
	}
	if left.Ready != 0 || left.Delayed != 0 {
		t.Errorf("after shutdown messages remain: ready=%d delayed=%d (something was left unacked):\n%s", left.Ready, left.Delayed, leftovers(amqpURL, b, bus.Live))
	}
	if err := converged(api, final); err != nil {
		t.Error(err)
	}
	stats := api.Stats()
	t.Logf("fake API: requests=%v faults=%v stale_writes=%d", stats.Requests, stats.FaultsInjected, stats.StaleWrites)
	if stats.DuplicateRecords != 0 {
		t.Errorf("duplicate remote records: %d", stats.DuplicateRecords)
	}
	if stats.OverlappingWrites != 0 {
		t.Errorf("overlapping writes on one entity: %d", stats.OverlappingWrites)
	}
	// An older event written while a newer write's outcome was unknown
	// regresses the record until the newer one's retry lands.
	if stats.StaleWrites != 0 {
		t.Errorf("stale writes (a record's version went down): %d", stats.StaleWrites)
	}

	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for body := range poison {
		want[body] = true
	}
	var got []string
	for _, m := range parked {
		body := string(m.Body)
		if strings.Contains(body, `"id":"p6"`) {
			if !strings.Contains(m.Reason, "over the 4096-byte limit") {
				t.Errorf("oversize parked with reason %q", m.Reason)
			}
			continue
		}
		got = append(got, body)
		if r, ok := poison[body]; !ok {
			t.Errorf("unexpected parked message %q (reason %s)", body, m.Reason)
		} else if !strings.Contains(m.Reason, r) {
			t.Errorf("parked %q with reason %q, want it to mention %q", body, m.Reason, r)
		}
		delete(want, body)
	}
	if len(parked) != len(poison)+1 || len(want) != 0 {
		sort.Strings(got)
		t.Errorf("parked %d messages, want exactly the %d poison ones; missing %v", len(parked), len(poison)+1, want)
	}
}

// converged compares the fake API's records with the expected final states.
func converged(api *fakeapi.Running, final map[string]finalState) error {
	byKey := map[string][]fakeapi.Record{}
	for _, r := range api.Records("listings") {
		byKey[r.ExternalID()] = append(byKey[r.ExternalID()], r)
	}
	var problems []string
	for key, want := range final {
		recs := byKey[key]
		switch {
		case want.deleted && len(recs) != 0:
			problems = append(problems, fmt.Sprintf("%s: deleted at v%d but %d remote record(s)", key, want.version, len(recs)))
		case !want.deleted && len(recs) != 1:
			problems = append(problems, fmt.Sprintf("%s: want 1 record at v%d, have %d", key, want.version, len(recs)))
		case !want.deleted:
			v, _ := recs[0]["version"].(json.Number)
			if recs[0]["title"] != want.title {
				problems = append(problems, fmt.Sprintf("%s: title %v (version %v), want %q", key, recs[0]["title"], v, want.title))
			}
		}
	}
	for key := range byKey {
		if _, ok := final[key]; !ok {
			problems = append(problems, fmt.Sprintf("%s: unexpected remote record", key))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return fmt.Errorf("%d entities differ, e.g. %s", len(problems), strings.Join(problems[:min(5, len(problems))], "; "))
	}
	return nil
}

// deleteQueues removes the test's topology from the shared broker.
func deleteQueues(t *testing.T, url string, b *rabbitmq.Bus) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	for _, q := range b.Queues() {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
	for _, x := range b.Exchanges() {
		_ = ch.ExchangeDelete(x, false, false)
	}
}

// dropStoreSchema removes the state store's schema of a test namespace.
func dropStoreSchema(t *testing.T, dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
		t.Logf("cleanup: %v", err)
	}
}

// deleteRedisPrefix removes every key of a test namespace from Redis.
func deleteRedisPrefix(t *testing.T, url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			_ = rdb.Unlink(ctx, batch...).Err()
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_ = rdb.Unlink(ctx, batch...).Err()
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleanup: %v", err)
	}
}
