package engine

// Worker throughput benchmarks (issue 3, docs/benchmarks.md "Worker
// throughput"). They run only with -bench, against the real RabbitMQ,
// Redis and PostgreSQL of this machine, each sub-benchmark in its own
// namespace, schema or key prefix. One op drains a batch of events that was
// published with the timer stopped; events/s is the figure to compare.
//
//	go test -run '^$' -bench BenchmarkWorkerZeroLatency -benchtime 3x -count 3 ./internal/engine
//	go test -run '^$' -bench BenchmarkWorker50msSink -benchtime 2x ./internal/engine

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/redis"
)

// latencySink is an in-process sink.Sink whose every call takes latency
// (0: returns at once) and succeeds. It isolates the worker's own cost
// (bus, store, engine) from any HTTP client or server.
type latencySink struct {
	latency time.Duration
	ids     atomic.Int64
}

func (s *latencySink) wait(ctx context.Context) error {
	if s.latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *latencySink) Create(ctx context.Context, _ sink.Record) (string, error) {
	if err := s.wait(ctx); err != nil {
		return "", err
	}
	return fmt.Sprintf("r%d", s.ids.Add(1)), nil
}

func (s *latencySink) Update(ctx context.Context, _ string, _ sink.Record) error {
	return s.wait(ctx)
}

func (s *latencySink) Delete(ctx context.Context, _, _ string) error { return s.wait(ctx) }

func (s *latencySink) Lookup(ctx context.Context, _, _ string) ([]string, error) {
	return nil, s.wait(ctx)
}

// benchRedis opens a Redis store under a fresh prefix whose keys are
// deleted when the benchmark ends.
func benchRedis(b *testing.B, noAutoPipeline bool) store.Store {
	url := testenv.Redis(b)
	prefix := testenv.UniqueName("bench")
	st, err := redis.Open(context.Background(), redis.Config{URL: url, Prefix: prefix, NoAutoPipeline: noAutoPipeline,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		defer func() { _ = st.Close() }()
		deleteRedisPrefix(b, st.Client(), prefix)
	})
	return st
}

func deleteRedisPrefix(b *testing.B, rdb *goredis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var names []string
	flush := func() {
		if len(names) > 0 {
			if err := rdb.Unlink(ctx, names...).Err(); err != nil {
				b.Errorf("cleanup: unlink %s keys: %v", prefix, err)
			}
			names = names[:0]
		}
	}
	for iter.Next(ctx) {
		names = append(names, iter.Val())
		if len(names) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		b.Errorf("cleanup: scan %s keys: %v", prefix, err)
	}
}

// benchPostgres opens a PostgreSQL store in a fresh schema (a pool of
// conns; 0 is the default size, as the worker uses it) that is dropped
// when the benchmark ends.
func benchPostgres(b *testing.B, noBatch bool, conns int32) store.Store {
	dsn := testenv.Postgres(b)
	schema := testenv.UniqueName("bench")
	st, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Schema: schema, NoBatch: noBatch, MaxConns: conns,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = st.Pool().Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		_ = st.Close()
	})
	return st
}

// benchBus opens the RabbitMQ bus in a fresh namespace and returns it with
// the name of its live quorum queue, which the raw baseline reads too.
func benchBus(b *testing.B) (*rabbitmq.Bus, string) {
	bs := rabbitmqtest.Open(b, rabbitmq.Config{Logger: slog.New(slog.DiscardHandler)})
	live := bs.Namespace() + "." + string(bus.Live)
	for _, q := range bs.Queues() {
		if q == live {
			return bs, live
		}
	}
	b.Fatalf("live queue %s not among the namespace's queues %v", live, bs.Queues())
	return nil, ""
}

// publishBatch publishes one upsert per key, at version, in chunks.
func publishBatch(b *testing.B, bs bus.Bus, keys []string, version int64) {
	const chunk = 1000
	msgs := make([]bus.Message, 0, chunk)
	for i, k := range keys {
		msgs = append(msgs, bus.Message{Body: upsert(k, version, "bench")})
		if len(msgs) == chunk || i == len(keys)-1 {
			if err := bs.Publish(context.Background(), bus.Live, msgs...); err != nil {
				b.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
}

func batchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%07d", prefix, i)
	}
	return keys
}

// drain runs one Worker until it has settled n deliveries, fails the
// benchmark unless every one was applied, and returns the rate over the
// middle 80% of them (steady state, without start-up and the last wave).
func drain(b *testing.B, bs bus.Bus, st store.Store, sk sink.Sink, concurrency, prefetch, n int) (steady float64) {
	w, done, cancel := startBenchWorker(b, bs, st, sk, concurrency, prefetch)
	started := time.Now()
	settled := w.done[bus.Live]
	lo, hi := int64(n/10), int64(n-n/10)
	var loAt, hiAt time.Time
	tick := time.NewTicker(time.Millisecond)
	timeout := time.NewTimer(10 * time.Minute)
	for settled.Load() < int64(n) {
		select {
		case <-tick.C:
		case err := <-done:
			b.Fatalf("worker stopped early: %v", err)
		case <-timeout.C:
			b.Fatalf("worker settled %d of %d events in 10 minutes", settled.Load(), n)
		}
		c := settled.Load()
		if loAt.IsZero() && c >= lo {
			loAt = time.Now()
		}
		if hiAt.IsZero() && c >= hi {
			hiAt = time.Now()
		}
	}
	b.StopTimer()
	b.Logf("drained %d events at concurrency %d: 10%% after %s, 90%% after %s, all after %s",
		n, concurrency, loAt.Sub(started).Round(time.Millisecond), hiAt.Sub(started).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	tick.Stop()
	timeout.Stop()
	cancel()
	if err := <-done; err != nil {
		b.Fatalf("worker Run: %v", err)
	}
	st2 := w.Status()
	if got := st2.Results[string(ResultApplied)]; got != int64(n) {
		b.Fatalf("applied %d of %d events (results %v): the benchmark would measure failures", got, n, st2.Results)
	}
	if hiAt.IsZero() || !hiAt.After(loAt) {
		return 0
	}
	return float64(hi-lo) / hiAt.Sub(loAt).Seconds()
}

// startBenchWorker starts a Worker on the live stream; done receives what
// Run returns once cancel is called.
func startBenchWorker(b *testing.B, bs bus.Bus, st store.Store, sk sink.Sink, concurrency, prefetch int) (w *Worker, done chan error, cancel func()) {
	cfg := Config{
		WorkerID:    testenv.UniqueName("benchworker"),
		Streams:     []bus.Stream{bus.Live},
		Concurrency: concurrency,
		Prefetch:    prefetch, // 0: the default, Concurrency
		Logger:      slog.New(slog.DiscardHandler),
	}
	w, err := NewWorker(bs, st, sk, cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return w, done, cancel
}

// hotKeys is how many keys the hot-key benchmark spreads its events over:
// with 256 events in flight, about five of each key at once.
const hotKeys = 50

// benchHotKeys measures one Worker draining n pre-published events of
// hotKeys keys (n/hotKeys versions each, a create and then updates,
// published in version order, as a busy source sends them) per op. Every event must end acked (applied, or
// stale once a newer one is); events of a key in flight at once used to
// wait for each other through the broker's retry tiers. retries/op counts
// the deliveries that did.
func benchHotKeys(b *testing.B, st store.Store, concurrency, n int) {
	bs, _ := benchBus(b)
	var retries int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		keys := batchKeys(fmt.Sprintf("h%d", i), hotKeys)
		for v := 1; v <= n/hotKeys; v++ {
			publishBatch(b, bs, keys, int64(v))
		}
		b.StartTimer()
		w, done, cancel := startBenchWorker(b, bs, st, &latencySink{}, concurrency, 0)
		started := time.Now()
		var results map[string]int64
		acked := func() int64 {
			results = w.Status().Results
			return results[string(ResultApplied)] + results[string(ResultDuplicate)] + results[string(ResultStale)] + results[string(ResultSuperseded)]
		}
		tick := time.NewTicker(time.Millisecond)
		timeout := time.NewTimer(10 * time.Minute)
		for w.done[bus.Live].Load() < int64(n) || acked() < int64(n) {
			select {
			case <-tick.C:
			case err := <-done:
				b.Fatalf("worker stopped early: %v", err)
			case <-timeout.C:
				b.Fatalf("worker acked %d of %d events in 10 minutes (results %v)", acked(), n, results)
			}
		}
		b.StopTimer()
		tick.Stop()
		timeout.Stop()
		b.Logf("drained %d events of %d keys at concurrency %d in %s: %v", n, hotKeys, concurrency, time.Since(started).Round(time.Millisecond), results)
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("worker Run: %v", err)
		}
		retries += results[string(ResultLocked)] + results[string(ResultRetried)]
		b.StartTimer()
	}
	reportRates(b, b.N*n, nil)
	b.ReportMetric(float64(retries)/float64(b.N), "retries/op")
}

// benchWorker measures one Worker draining n pre-published creates (new
// keys each op: lease, intent, create, commit) or updates (keys seeded
// once: lease, update, commit) per op.
func benchWorker(b *testing.B, st store.Store, sk sink.Sink, concurrency, prefetch, n int, updates bool) {
	bs, _ := benchBus(b)
	var keys []string
	if updates {
		keys = batchKeys("u", n)
		seedApplied(b, st, keys)
	}
	var steady []float64
	b.ResetTimer() // setup (topology, seeding) is not the worker's work
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		version := int64(1)
		if updates {
			version = int64(i + 2)
		} else {
			keys = batchKeys(fmt.Sprintf("c%d", i), n)
		}
		publishBatch(b, bs, keys, version)
		b.StartTimer()
		steady = append(steady, drain(b, bs, st, sk, concurrency, prefetch, n))
	}
	reportRates(b, b.N*n, steady)
}

// seedApplied commits version 1 with a remote id for every key, so the
// benchmark's events take the update path.
func seedApplied(b *testing.B, st store.Store, keys []string) {
	ctx := context.Background()
	var g sync.WaitGroup
	errs := make(chan error, 32)
	work := make(chan string)
	for range 32 {
		g.Go(func() {
			for k := range work {
				key := store.Key{Entity: "listing", Key: k}
				l, _, err := st.Acquire(ctx, key, "seed", time.Minute, 0)
				if err == nil {
					err = st.Commit(ctx, l, store.Commit{Version: 1, RemoteID: "r-" + k, Event: upsert(k, 1, "seed")})
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for _, k := range keys {
		work <- k
	}
	close(work)
	g.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("seed store: %v", err)
	}
}

// benchRaw is the baseline: plain amqp091-go consume-and-ack of n messages
// from the same kind of namespace's live quorum queue, with the same
// prefetch as the worker, on a fresh channel each op.
func benchRaw(b *testing.B, prefetch, n int) {
	bs, live := benchBus(b)
	base, err := rabbitmq.OpenBaseline(testenv.RabbitMQ(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = base.Close() })
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		publishBatch(b, bs, batchKeys(fmt.Sprintf("c%d", i), n), 1)
		b.StartTimer()
		if err := base.ConsumeAck(ctx, live, n, prefetch); err != nil {
			b.Fatal(err)
		}
	}
	reportRates(b, b.N*n, nil)
}

func reportRates(b *testing.B, events int, steady []float64) {
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	if len(steady) > 0 {
		var sum float64
		for _, s := range steady {
			sum += s
		}
		b.ReportMetric(sum/float64(len(steady)), "steady-events/s")
	}
	b.ReportMetric(0, "ns/op")
}

// zeroLatencyBatch is the events drained per op against the zero-latency
// sink: a few seconds of work, so start-up is a small share.
const zeroLatencyBatch = 5000

// BenchmarkWorkerZeroLatency: one Worker (concurrency and prefetch 256, the
// default) against a sink that returns at once, with each store, beside the
// raw amqp091-go consume-and-ack loop on the same kind of quorum queue with
// the same prefetch. The ratio worker/raw is the target (Redis ≥
// 60%, PostgreSQL ≥ 30%). applier-only/* is the same work without the bus
// (Applier.Apply from 256 goroutines), to tell the store's share of the
// cost from the bus's. */hot is 5,000 events of 50 keys (benchHotKeys).
func BenchmarkWorkerZeroLatency(b *testing.B) {
	const concurrency = 256
	b.Run("raw", func(b *testing.B) { benchRaw(b, concurrency, zeroLatencyBatch) })
	for _, kind := range []string{"redis", "redis-unpipelined", "postgres", "postgres-unbatched"} {
		b.Run("applier-only/"+kind+"/create", func(b *testing.B) {
			benchApplier(b, openBenchStore(b, kind), concurrency, zeroLatencyBatch)
		})
		for _, op := range []string{"create", "update"} {
			b.Run(kind+"/"+op, func(b *testing.B) {
				st := openBenchStore(b, kind)
				benchWorker(b, st, &latencySink{}, concurrency, 0, zeroLatencyBatch, op == "update")
			})
		}
		b.Run(kind+"/hot", func(b *testing.B) { benchHotKeys(b, openBenchStore(b, kind), concurrency, zeroLatencyBatch) })
	}
}

// openBenchStore opens kind: redis or postgres, or redis-unpipelined /
// postgres-unbatched (every lease call its own round trip, as before).
func openBenchStore(b *testing.B, kind string) store.Store {
	if strings.HasPrefix(kind, "postgres") {
		return benchPostgres(b, kind == "postgres-unbatched", 0)
	}
	return benchRedis(b, kind == "redis-unpipelined")
}

// BenchmarkWorker50msSink: one Worker with the Redis store against a sink
// whose every call takes 50 ms, at concurrency 64, 256 and 1,000, each
// draining 40 waves of creates per op. The ideal is concurrency / 50 ms;
// %ideal is the target (≥ 90%). raw is the broker's own consume-and-ack
// rate at prefetch 1,000 in the same run, an upper bound for any worker.
func BenchmarkWorker50msSink(b *testing.B) {
	const latency = 50 * time.Millisecond
	const waves = 40
	// Prefetch twice the concurrency keeps deliveries waiting in the
	// worker, so a freed slot does not wait for the broker's round trip.
	b.Run("redis/c=64/prefetch=128", func(b *testing.B) {
		benchWorker(b, benchRedis(b, false), &latencySink{latency: latency}, 64, 128, 64*waves, false)
		b.ReportMetric(100*float64(b.N*64*waves)/b.Elapsed().Seconds()/(64/latency.Seconds()), "%ideal")
	})
	b.Run("raw-prefetch1000", func(b *testing.B) { benchRaw(b, 1000, 1000*waves) })
	run := func(kind string, c int) {
		b.Run(fmt.Sprintf("%s/c=%d", kind, c), func(b *testing.B) {
			st := openBenchStore(b, kind)
			benchWorker(b, st, &latencySink{latency: latency}, c, 0, c*waves, false)
			ideal := float64(c) / latency.Seconds()
			b.ReportMetric(100*float64(b.N*c*waves)/b.Elapsed().Seconds()/ideal, "%ideal")
		})
	}
	for _, c := range []int{64, 256, 1000} {
		run("redis", c)
	}
	// The store's round trips, not the sink, bound c=1000: the same run
	// without shared pipelines shows by how much.
	run("redis-unpipelined", 1000)
}

// benchApplier is the worker without the bus: 256 goroutines call
// Applier.Apply on n new keys per op against the zero-latency sink, so the
// store's share of the worker's cost can be told from the bus's.
func benchApplier(b *testing.B, st store.Store, goroutines, n int) {
	a, err := NewApplier(st, &latencySink{}, Config{WorkerID: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		bodies := make([][]byte, n)
		for j, k := range batchKeys(fmt.Sprintf("a%d", i), n) {
			bodies[j] = upsert(k, 1, "bench")
		}
		var next, failed atomic.Int64
		var g sync.WaitGroup
		b.StartTimer()
		for range goroutines {
			g.Go(func() {
				for j := next.Add(1) - 1; j < int64(n); j = next.Add(1) - 1 {
					if out := a.Apply(context.Background(), bodies[j], 1); out.Result != ResultApplied {
						failed.Add(1)
					}
				}
			})
		}
		g.Wait()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d of %d applies failed", f, n)
		}
	}
	reportRates(b, b.N*n, nil)
}
