package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestBulkResync is issue 18's measurement of bulk endpoints
// (docs/benchmarks.md, "Bulk endpoints"): a resync of N entities (a
// PostgreSQL table of N rows published by `eventsync resync`) drained by
// one real `eventsync worker` process (Redis store, default throttle, which
// learns the limit) into the fake API limited to 500 requests/s, with the
// entity's bulk endpoints configured (batches of up to 100) and, for
// comparison in the same round, without them on a smaller table (one
// request per entity would take N/500 seconds). The ceiling of the machine
// is measured in the same round too: the raw amqp091 consume-and-ack loop
// (test/bench/baselines ack) draining a resync queue of the same N events.
// Each run checks convergence: N records, no duplicate, no stale write.
//
//	EVENTSYNC_BENCH_BULK=1 go test -run TestBulkResync -v -timeout 120m ./test/bench
//
// EVENTSYNC_BENCH_BULK_ENTITIES (1000000), _SINGLE_ENTITIES (20000),
// _ROUNDS (1), _RATE (500), _BATCH (100), _CONCURRENCY (1024);
// _PROFILE=FILE writes a 20 s CPU profile of each bulk drain to
// FILE.roundN and its goroutines 10 s in to FILE.roundN.goroutines. The table is logged after "RESULT".
func TestBulkResync(t *testing.T) {
	if os.Getenv("EVENTSYNC_BENCH_BULK") != "1" {
		t.Skip("set EVENTSYNC_BENCH_BULK=1 to run (resyncs a million entities; many minutes)")
	}
	env := &bulkEnv{
		entities:    envInt(t, "EVENTSYNC_BENCH_BULK_ENTITIES", 1_000_000),
		single:      envInt(t, "EVENTSYNC_BENCH_BULK_SINGLE_ENTITIES", 20_000),
		rate:        envInt(t, "EVENTSYNC_BENCH_BULK_RATE", 500),
		batch:       envInt(t, "EVENTSYNC_BENCH_BULK_BATCH", 100),
		concurrency: envInt(t, "EVENTSYNC_BENCH_BULK_CONCURRENCY", 1024),
		amqpURL:     testenv.RabbitMQ(t),
		redisURL:    testenv.Redis(t),
		pgURL:       testenv.Postgres(t),
	}
	rounds := envInt(t, "EVENTSYNC_BENCH_BULK_ROUNDS", 1)
	if os.Getenv("EVENTSYNC_BENCH_BULK_PROFILE") != "" {
		t.Setenv("EVENTSYNC_ADMIN_PPROF", "true")
	}
	dir := t.TempDir()
	env.bin = filepath.Join(dir, "eventsync")
	goBuild(t, filepath.Join("..", ".."), env.bin, "./cmd/eventsync")
	env.baselines = filepath.Join(dir, "baselines")
	goBuild(t, "baselines", env.baselines, ".")
	commit := commitOf(filepath.Join("..", ".."))
	load0 := loadAvg()

	var rows []string
	for round := 1; round <= rounds; round++ {
		runs := []func() string{
			func() string { return env.run(t, round, "bulk", env.entities, env.batch) },
			func() string { return env.run(t, round, "one request per entity", env.single, 0) },
			func() string { return env.ackBaseline(t, round, env.entities) },
		}
		for i := range runs {
			rows = append(rows, runs[(i+round-1)%len(runs)]())
		}
	}
	t.Logf("RESULT\neventsync %s; fake API limited to %d requests/s; batches of up to %d; worker.concurrency %d; Redis store, RabbitMQ %s; load average at start %s, at end %s\n\n"+
		"| round | contender | entities | published/s (resync) | applied/s | API requests | entities per request | of the goal (%d/s) | 429s | converged |\n"+
		"|---|---|---|---|---|---|---|---|---|---|\n%s",
		commit, env.rate, env.batch, env.concurrency, rabbitVersion(t, env.amqpURL), load0, loadAvg(),
		env.rate*env.batch*8/10, strings.Join(rows, "\n"))
}

type bulkEnv struct {
	entities, single, rate, batch, concurrency int
	amqpURL, redisURL, pgURL                   string
	bin, baselines                             string
}

// resync creates a table of n rows and publishes it to a fresh namespace's
// resync stream with `eventsync resync`; it returns the namespace and the
// publish rate.
func (env *bulkEnv) resync(t *testing.T, n int) (ns string, perSecond float64) {
	ns = testenv.UniqueName("bulk")
	// The worker declares the default retry tiers; so must this bus, or its
	// cleanup would miss their queues.
	rabbitmqtest.Open(t, rabbitmq.Config{URL: env.amqpURL, Namespace: ns, RetryTiers: rabbitmq.DefaultRetryTiers})
	t.Cleanup(func() { deleteRedisPrefix(t, env.redisURL, ns) })
	// The table lives in a schema of its own, with the outbox's functions
	// (the snapshot filters its data through them).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, env.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), env.pgURL)
		if err == nil {
			_, err = c.Exec(context.Background(), "DROP SCHEMA "+ns+" CASCADE")
			_ = c.Close(context.Background())
		}
		if err != nil {
			t.Errorf("cleanup: drop schema %s: %v", ns, err)
		}
	})
	source := testenv.WithParam(env.pgURL, "search_path", ns)
	if out, err := exec.Command(env.bin, "outbox", "install", "--source", source).CombinedOutput(); err != nil {
		t.Fatalf("eventsync outbox install: %v\n%s", err, out)
	}
	table := ns + ".listings"
	if _, err := conn.Exec(ctx, "CREATE TABLE "+table+" (id bigint PRIMARY KEY, title text NOT NULL, price int NOT NULL, eventsync_version bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO "+table+" SELECT i, 'listing ' || i, 100 + i % 900, 1 FROM generate_series(1, $1) AS i", n); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(env.bin, "resync", "--source", source, "--bus", env.amqpURL, "--store", env.redisURL,
		"--namespace", ns, "--table", table, "--entity", "listing", "--key", "id", "--page-size", "5000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("eventsync resync: %v\n%s", err, out)
	}
	return ns, float64(n) / time.Since(start).Seconds()
}

// run resyncs n entities and drains them with one worker, batches of up to
// batch (0: no bulk endpoints configured).
func (env *bulkEnv) run(t *testing.T, round int, name string, n, batch int) string {
	var row string
	t.Run(fmt.Sprintf("round%d/%s", round, strings.ReplaceAll(name, " ", "_")), func(t *testing.T) {
		ns, published := env.resync(t, n)
		apiAddr := freeAddr(t)
		apiURL := "http://" + apiAddr
		startProc(t, "fakeapi", env.bin, "fakeapi", "--listen", apiAddr, "--rate-limit", fmt.Sprint(env.rate))
		waitHTTP(t, apiURL+"/_admin/stats")

		bulk := ""
		if batch > 0 {
			bulk = fmt.Sprintf("      batch:\n        max_items: %d\n", batch)
		}
		cfg := fmt.Sprintf("bus: %s\nstore: %s\nnamespace: %s\nworker:\n  concurrency: %d\nlog:\n  level: warn\nsink:\n  defaults:\n    base_url: %s\n  entities:\n    listing:\n      collection: listings\n%s",
			env.amqpURL, env.redisURL, ns, env.concurrency, apiURL, bulk)
		cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		admin := freeAddr(t)
		load := loadAvg()
		start := time.Now()
		p := startProc(t, "worker", env.bin, "worker", "--config", cfgPath, "--streams", "resync", "--admin", admin)
		if out := os.Getenv("EVENTSYNC_BENCH_BULK_PROFILE"); out != "" && batch > 0 {
			// A CPU profile of the bulk drain, 10 s in, for 20 s (the worker
			// serves /debug/pprof/ because the test set
			// EVENTSYNC_ADMIN_PPROF, which it inherits).
			profiled := make(chan struct{})
			defer func() { <-profiled }()
			go func() {
				defer close(profiled)
				time.Sleep(10 * time.Second)
				if err := fetchProfile("http://"+admin+"/debug/pprof/goroutine?debug=1", fmt.Sprintf("%s.round%d.goroutines", out, round)); err != nil {
					t.Errorf("goroutine profile: %v", err)
				}
				if err := fetchProfile("http://"+admin+"/debug/pprof/profile?seconds=20", fmt.Sprintf("%s.round%d", out, round)); err != nil {
					t.Errorf("CPU profile: %v", err)
				}
			}()
		}
		var settled int64
		var results map[string]int64
		nextLog := start.Add(30 * time.Second)
		// Retried deliveries (a 429) count as settled and come back: done
		// is when every entity is applied.
		for deadline := start.Add(90 * time.Minute); results["applied"] < int64(n); time.Sleep(50 * time.Millisecond) {
			select {
			case err := <-p.done:
				p.done <- err
				t.Fatalf("worker exited after %s: %v", time.Since(start).Round(time.Millisecond), err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("worker settled %d deliveries (%v) of %d events in 90 minutes", settled, results, n)
			}
			if st, err := readWorkerStatus(admin); err == nil {
				settled, results = st.Done[string(bus.Resync)], st.Results
			}
			if time.Now().After(nextLog) {
				t.Logf("%s: %s settled %d", name, time.Since(start).Round(time.Second), settled)
				nextLog = time.Now().Add(30 * time.Second)
			}
		}
		elapsed := time.Since(start)
		p.stop(t)
		st, batches := readBulkStats(t, apiURL)
		requests := int64(0)
		refused := int64(0)
		for _, byStatus := range st.Requests {
			for status, c := range byStatus {
				requests += c
				if status == "429" {
					refused += c
				}
			}
		}
		converged := st.Records["listings"] == int64(n) && st.DuplicateRecords == 0 && st.StaleWrites == 0 && results["applied"] == int64(n)
		if !converged {
			t.Errorf("%s: not converged: %d records of %d, %d duplicates, %d stale writes, results %v", name, st.Records["listings"], n, st.DuplicateRecords, st.StaleWrites, results)
		}
		applied := float64(n) / elapsed.Seconds()
		t.Logf("%s: %d entities in %s = %.0f/s; %d API requests (%d 429), batch counters %v; results %v; load average %s",
			name, n, elapsed.Round(time.Millisecond), applied, requests, refused, batches, results, load)
		goal := float64(env.rate * env.batch * 8 / 10)
		row = fmt.Sprintf("| %d | %s | %d | %.0f | **%.0f** | %d | %.1f | %.0f %% | %d | %t |",
			round, name, n, published, applied, requests, float64(n)/float64(max(1, requests)), 100*applied/goal, refused, converged)
	})
	return row
}

// ackBaseline resyncs n entities and drains them with the raw
// consume-and-ack loop: what the bus alone allows on this machine.
func (env *bulkEnv) ackBaseline(t *testing.T, round, n int) string {
	var row string
	t.Run(fmt.Sprintf("round%d/raw_ack", round), func(t *testing.T) {
		ns, published := env.resync(t, n)
		queue := ns + "." + string(bus.Resync)
		load := loadAvg()
		start := time.Now()
		cmd := exec.Command(env.baselines, "ack", "-amqp", env.amqpURL, "-queue", queue, "-n", fmt.Sprint(n), "-concurrency", fmt.Sprint(env.concurrency))
		out := &doneWriter{done: make(chan time.Time, 1)}
		cmd.Stdout = out
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var elapsed time.Duration
		select {
		case at := <-out.done:
			elapsed = at.Sub(start)
			if err := <-exited; err != nil {
				t.Fatalf("baselines ack: %v after it was done\n%s", err, stderr.String())
			}
		case err := <-exited:
			t.Fatalf("baselines ack exited before it was done: %v\n%s", err, stderr.String())
		}
		rate := float64(n) / elapsed.Seconds()
		t.Logf("raw ack: %d events in %s = %.0f/s; load average %s", n, elapsed.Round(time.Millisecond), rate, load)
		goal := float64(env.rate * env.batch * 8 / 10)
		row = fmt.Sprintf("| %d | raw consume-and-ack loop (no API, no state) | %d | %.0f | %.0f | – | – | %.0f %% | – | – |", round, n, published, rate, 100*rate/goal)
	})
	return row
}

// readWorkerStatus reads a worker's /status.
func readWorkerStatus(addr string) (workerStatus, error) {
	var st workerStatus
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode /status: %w", err)
	}
	return st, nil
}

// readBulkStats reads the fake API's stats, and its batch counters as they
// are (whatever their names).
func readBulkStats(t *testing.T, apiURL string) (fakeapi.Stats, map[string]any) {
	resp, err := http.Get(apiURL + "/_admin/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("decode fake API stats: %v", err)
	}
	b, _ := json.Marshal(raw)
	var st fakeapi.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("decode fake API stats: %v", err)
	}
	batches := map[string]any{}
	for k, v := range raw {
		if strings.Contains(k, "batch") {
			var x any
			_ = json.Unmarshal(v, &x)
			batches[k] = x
		}
	}
	return st, batches
}

// fetchProfile saves the profile at url to path.
func fetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
