package bench

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestOrderedModeHotKeys is issue 18's measurement of per-key ordered mode
// (docs/benchmarks.md, "Per-key ordered mode"): hot keys, K keys × V
// versions each, published at once in commit order (each key's versions in
// order, keys interleaved at random), drained by W real `eventsync worker`
// processes (Redis store) into the fake API answering after 20 ms, on
// RabbitMQ and on NATS JetStream (a server embedded in the test process,
// nats-server 2.15, listening on a loopback port). The
// competing-consumers mode (bus_partitions: 0) and ordered mode
// (bus_partitions: P) run in the same test, alternating run by run, W = 1
// and W = 4. Each run counts, over all workers (their /status), the
// deliveries retried because another worker held the key ("locked"),
// settled without a call as stale, duplicate or superseded, and the API's
// writes; it checks convergence (every record at version V, no duplicate,
// no stale write). Time runs from the publish until every event is
// settled and the queues are empty.
//
//	EVENTSYNC_BENCH_ORDERED=1 go test -run TestOrderedModeHotKeys -v -timeout 30m ./test/bench
//
// EVENTSYNC_BENCH_ORDERED_KEYS (200), _VERSIONS (20), _PARTITIONS (8),
// _ROUNDS (2), _BUSES (rabbitmq,nats). The table is logged after "RESULT".
func TestOrderedModeHotKeys(t *testing.T) {
	if os.Getenv("EVENTSYNC_BENCH_ORDERED") != "1" {
		t.Skip("set EVENTSYNC_BENCH_ORDERED=1 to run (8 runs of 4,000 events; a few minutes)")
	}
	keys := envInt(t, "EVENTSYNC_BENCH_ORDERED_KEYS", 200)
	versions := envInt(t, "EVENTSYNC_BENCH_ORDERED_VERSIONS", 20)
	partitions := envInt(t, "EVENTSYNC_BENCH_ORDERED_PARTITIONS", 8)
	rounds := envInt(t, "EVENTSYNC_BENCH_ORDERED_ROUNDS", 2)
	amqpURL, redisURL := testenv.RabbitMQ(t), testenv.Redis(t)
	buses := []benchBus{rabbitBench{url: amqpURL}}
	if v := os.Getenv("EVENTSYNC_BENCH_ORDERED_BUSES"); v != "" && !strings.Contains(v, "rabbitmq") {
		buses = nil
	}
	if v := os.Getenv("EVENTSYNC_BENCH_ORDERED_BUSES"); v == "" || strings.Contains(v, "nats") {
		srv, err := embedded.Start(context.Background(), embedded.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		buses = append(buses, natsBench{url: srv.ClientURL()})
	}
	bin := filepath.Join(t.TempDir(), "eventsync")
	goBuild(t, filepath.Join("..", ".."), bin, "./cmd/eventsync")
	commit := commitOf(filepath.Join("..", ".."))
	load0 := loadAvg()

	var rows []string
	for round := 1; round <= rounds; round++ {
		for _, bb := range buses {
			for _, workers := range []int{1, 4} {
				for _, p := range []int{0, partitions} {
					r := runHotKeys(t, bin, bb, redisURL, keys, versions, workers, p, uint64(round))
					mode := "competing consumers"
					if p > 0 {
						mode = fmt.Sprintf("ordered, %d partitions", p)
					}
					n := float64(keys * versions)
					rows = append(rows, fmt.Sprintf("| %d | %s | %d | %s | %.0f | %d (%.0f per 10k) | %d | %d | %d | %.3f | %d |",
						round, bb.name(), workers, mode, n/r.elapsed.Seconds(), r.results["locked"], float64(r.results["locked"])*10000/n,
						r.results["stale"], r.results["duplicate"], r.results["superseded"], float64(r.writes)/n, r.staleWrites))
					t.Logf("round %d, %s, %d workers, %s: %s, results %v, API writes %d", round, bb.name(), workers, mode, r.elapsed.Round(time.Millisecond), r.results, r.writes)
				}
			}
		}
	}
	t.Logf("RESULT\neventsync %s; %d keys × %d versions, fake API 20 ms, Redis store, RabbitMQ %s; load average at start %s, at end %s\n\n"+
		"| round | bus | workers | mode | events/s | locked retries | stale | duplicate | superseded | API writes per version | stale writes |\n"+
		"|---|---|---|---|---|---|---|---|---|---|---|\n%s",
		commit, keys, versions, rabbitVersion(t, amqpURL), load0, loadAvg(), strings.Join(rows, "\n"))
}

// benchBus is a broker the measurement runs on.
type benchBus interface {
	name() string
	busURL() string
	// open opens the test's own bus in namespace ns; close removes it.
	open(t *testing.T, ctx context.Context, ns string, partitions int) (b bus.Bus, close func())
	// settled reports whether nothing of stream is left: ready, delayed
	// or in flight.
	settled(ctx context.Context, b bus.Bus) bool
}

type rabbitBench struct{ url string }

func (r rabbitBench) name() string   { return "RabbitMQ" }
func (r rabbitBench) busURL() string { return r.url }
func (r rabbitBench) open(t *testing.T, ctx context.Context, ns string, partitions int) (bus.Bus, func()) {
	b, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: r.url, Namespace: ns, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	return b, func() {
		_ = b.Close()
		deleteBenchTopology(t, r.url, b)
	}
}
func (r rabbitBench) settled(ctx context.Context, b bus.Bus) bool {
	st, err := b.Stats(ctx, bus.Live)
	return err == nil && st.Ready == 0 && st.Delayed == 0
}

type natsBench struct{ url string }

func (n natsBench) name() string   { return "NATS" }
func (n natsBench) busURL() string { return n.url }
func (n natsBench) open(t *testing.T, ctx context.Context, ns string, partitions int) (bus.Bus, func()) {
	b, err := natsjs.Open(ctx, natsjs.Config{URL: n.url, Namespace: ns, Partitions: partitions, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return b, func() {
		_ = b.DeleteStreams(context.Background())
		_ = b.Close()
	}
}
func (n natsBench) settled(ctx context.Context, b bus.Bus) bool {
	left, err := b.(*natsjs.Bus).Unsettled(ctx, bus.Live)
	return err == nil && left == 0
}

type hotKeysResult struct {
	elapsed     time.Duration
	results     map[string]int64
	writes      int64
	staleWrites int64
}

func rabbitVersion(t *testing.T, url string) string {
	b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: testenv.UniqueName("probe")})
	if err != nil {
		return "?"
	}
	defer b.Close()
	defer deleteBenchTopology(t, url, b)
	return b.ServerVersion()
}

func runHotKeys(t *testing.T, bin string, bb benchBus, redisURL string, keys, versions, workers, partitions int, seed uint64) hotKeysResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ns := testenv.UniqueName("ordered")
	api, err := fakeapi.Start(ctx, fakeapi.Config{Faults: fakeapi.Faults{Latency: fakeapi.Duration(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	b, closeBus := bb.open(t, ctx, ns, partitions)
	defer func() {
		closeBus()
		deleteRedisPrefix(t, redisURL, ns)
	}()
	cfg := fmt.Sprintf("bus: %s\nstore: %s\nnamespace: %s\nbus_partitions: %d\nlog:\n  level: warn\nsink:\n  defaults:\n    base_url: %s\n  entities:\n    listing:\n      collection: listings\n",
		bb.busURL(), redisURL, ns, partitions, api.URL)
	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	admins := make([]string, workers)
	procs := make([]*proc, workers)
	for i := range workers {
		admins[i] = freeAddr(t)
		procs[i] = startProc(t, fmt.Sprintf("worker-%d", i), bin, "worker", "--config", cfgPath, "--admin", admins[i], "--worker-id", fmt.Sprintf("w%d", i))
	}
	// Every worker subscribed before the events arrive.
	waitSubscribed(t, ctx, b, workers)

	var msgs []bus.Message
	for _, e := range interleaved(keys, versions, seed) {
		msgs = append(msgs, bus.Message{Body: fmt.Appendf(nil, `{"id":"e-%d-%d","entity":"listing","key":"k%03d","version":%d,"op":"upsert","data":{"title":"listing %d v%d","version":%d}}`,
			e.key, e.version, e.key, e.version, e.key, e.version, e.version)})
	}
	start := time.Now()
	if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
	var res hotKeysResult
	for {
		if ctx.Err() != nil {
			t.Fatalf("%d workers, %d partitions: not settled in time: %v", workers, partitions, res.results)
		}
		time.Sleep(20 * time.Millisecond)
		res.results = map[string]int64{}
		ok := true
		for _, a := range admins {
			_, r, err := workerSettled(a)
			if err != nil {
				ok = false
				break
			}
			for k, v := range r {
				res.results[k] += v
			}
		}
		final := res.results["applied"] + res.results["stale"] + res.results["duplicate"] + res.results["superseded"] + res.results["parked"]
		if !ok || final < int64(keys*versions) {
			continue
		}
		if bb.settled(ctx, b) {
			break
		}
	}
	res.elapsed = time.Since(start)
	for _, p := range procs {
		p.stop(t)
	}
	stats := api.Stats()
	for method, byStatus := range stats.Requests {
		if method == "GET" {
			continue
		}
		for _, n := range byStatus {
			res.writes += n
		}
	}
	res.staleWrites = stats.StaleWrites
	if stats.DuplicateRecords != 0 || stats.StaleWrites != 0 {
		t.Errorf("%d workers, %d partitions: duplicates %d, stale writes %d", workers, partitions, stats.DuplicateRecords, stats.StaleWrites)
	}
	recs := api.Records("listings")
	if len(recs) != keys {
		t.Errorf("%d workers, %d partitions: %d records, want %d", workers, partitions, len(recs), keys)
	}
	for _, r := range recs {
		if v, _ := r["version"].(float64); int(v) != versions {
			t.Errorf("%d workers, %d partitions: record %v at version %v, want %d", workers, partitions, r["external_id"], r["version"], versions)
			break
		}
	}
	return res
}

// hotEvent is one version of a hot key to publish.
type hotEvent struct {
	key     int
	version int
}

// interleaved returns versions 1..versions of keys keys, each key's in
// order, keys interleaved at random (seeded).
func interleaved(keys, versions int, seed uint64) []hotEvent {
	rng := rand.New(rand.NewPCG(seed, 18))
	next := make([]int, keys)
	var out []hotEvent
	for len(out) < keys*versions {
		k := rng.IntN(keys)
		if next[k] == versions {
			continue
		}
		next[k]++
		out = append(out, hotEvent{key: k, version: next[k]})
	}
	return out
}

// waitSubscribed waits until every worker consumes the live stream (in
// ordered mode too, Stats counts subscriptions).
func waitSubscribed(t *testing.T, ctx context.Context, b bus.Bus, workers int) {
	for ctx.Err() == nil {
		if st, err := b.Stats(ctx, bus.Live); err == nil && st.Consumers >= workers {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d workers did not all subscribe", workers)
}

func deleteBenchTopology(t *testing.T, url string, b *rabbitmq.Bus) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, q := range b.Queues() {
		_, _ = ch.QueueDelete(q, false, false, false)
	}
	for _, x := range b.Exchanges() {
		_ = ch.ExchangeDelete(x, false, false)
	}
}
