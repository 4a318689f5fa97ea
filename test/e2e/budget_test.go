package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestSixteenWorkersFitADefaultPostgres is the connection budget of
// docs/deploy.md on a real server: a throwaway PostgreSQL cluster with
// max_connections 100 (so the suite's shared server is not starved), 16
// worker processes and a relay with the default pool sizes, and the
// application writing through connections of its own. The workload
// converges, the eventsync processes together never hold more than 73
// connections, and 20 application connections open while they run.
func TestSixteenWorkersFitADefaultPostgres(t *testing.T) {
	const (
		workers  = 16
		rows     = 2000
		appConns = 20
		budget   = 73 // 16 × 4 (store pool) + 9 (relay: source pool 8 + LISTEN)
	)
	amqpURL := testenv.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dsn := throwawayPostgres(t, 100)

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE listings (id bigint PRIMARY KEY, title text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	ns := testenv.UniqueName("budget")
	for _, args := range [][]string{
		{"outbox", "install", "--source", dsn},
		{"outbox", "install-trigger", "--source", dsn, "--table", "listings", "--entity", "listing", "--key", "id"},
	} {
		if out, err := run(t, ctx, args...); err != nil {
			t.Fatalf("eventsync %v: %v\n%s", args, err, out)
		}
	}

	api, _ := apiAndBus(t, ctx, 5*time.Millisecond, amqpURL, ns)

	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf(`bus: %s
store: %s
source: %s
namespace: %s
worker:
  concurrency: 64
log:
  level: warn
sink:
  defaults:
    base_url: %s
    timeout: 10s
  entities:
    listing:
      collection: listings
`, amqpURL, dsn, dsn, ns, api.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	// Sample the server's client connections, the sampler's own excluded.
	var peak atomic.Int64
	sampler, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() {
		defer sampler.Close(context.Background())
		for sampleCtx.Err() == nil {
			var n int64
			if err := sampler.QueryRow(sampleCtx, `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'budget-test-app'`).Scan(&n); err == nil && n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-sampleCtx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	})

	procs := []*proc{start(t, "relay", "relay", "--config", cfgPath, "--admin", "off")}
	for i := range workers {
		procs = append(procs, start(t, fmt.Sprintf("worker-%d", i), "worker", "--config", cfgPath, "--admin", "off", "--streams", "live", "--worker-id", fmt.Sprintf("w%d", i)))
	}

	// The application: writes rows in batches while everything runs.
	if _, err := conn.Exec(ctx, `INSERT INTO listings SELECT g, 'listing ' || g FROM generate_series(1, $1::int) g`, rows/2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the fleet connects and starts applying
	app := make([]*pgx.Conn, 0, appConns)
	defer func() {
		for _, c := range app {
			_ = c.Close(context.Background())
		}
	}()
	appCfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	appCfg.RuntimeParams["application_name"] = "budget-test-app"
	for range appConns {
		c, err := pgx.ConnectConfig(ctx, appCfg)
		if err != nil {
			t.Fatalf("application connection %d of %d while 16 workers and a relay run: %v", len(app)+1, appConns, err)
		}
		app = append(app, c)
	}
	if _, err := app[0].Exec(ctx, `INSERT INTO listings SELECT g, 'listing ' || g FROM generate_series($1::int, $2::int) g`, rows/2+1, rows); err != nil {
		t.Fatal(err)
	}

	waitFor(t, 3*time.Minute, "every row applied", func() error {
		recs := api.Records("listings")
		if len(recs) < rows {
			return fmt.Errorf("%d of %d records", len(recs), rows)
		}
		return nil
	})
	stopSampling()
	sampling.Wait()
	for _, p := range procs {
		p.stop(t, 20*time.Second)
	}
	t.Logf("%d workers and a relay with default pools: peak %d connections of theirs (budget %d) with %d application connections open; max_connections 100",
		workers, peak.Load(), budget, appConns)
	if peak.Load() > budget {
		t.Errorf("eventsync held %d connections at peak, above the documented budget of %d", peak.Load(), budget)
	}
	if s := api.Stats(); s.DuplicateRecords != 0 {
		t.Errorf("%d duplicate records", s.DuplicateRecords)
	}
}

// throwawayPostgres starts a PostgreSQL cluster of its own in a temporary
// directory with max_connections conns and returns a DSN of its postgres
// database; the cluster is stopped and removed when the test ends. It
// skips when no PostgreSQL server binaries are installed (fails under
// EVENTSYNC_REQUIRE_SERVICES=1).
func throwawayPostgres(t *testing.T, conns int) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	initdb := ""
	if len(bins) > 0 {
		initdb = bins[len(bins)-1]
	} else if p, err := exec.LookPath("initdb"); err == nil {
		initdb = p
	}
	if initdb == "" {
		if testenv.Required() {
			t.Fatal("no initdb: install the PostgreSQL server (postgresql) to run this test")
		}
		t.Skip("no initdb: install the PostgreSQL server (postgresql) to run this test")
	}
	pgctl := filepath.Join(filepath.Dir(initdb), "pg_ctl")

	// initdb refuses to run as root: run the cluster as postgres then.
	var asUser []string
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skip("running as root without a postgres user to own the throwaway cluster")
		}
		asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	dir, err := os.MkdirTemp("", "eventsync-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if len(asUser) > 0 {
		if out, err := exec.Command("chown", "postgres:", dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
	}
	pgRun := func(args ...string) {
		t.Helper()
		argv := append(slices.Clone(asUser), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	data := filepath.Join(dir, "data")
	pgRun(initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync")
	port := testenv.FreePort(t)
	pgRun(pgctl, "-D", data, "-l", filepath.Join(dir, "server.log"), "-w", "-t", "60", "start",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=%d -c fsync=off -c shared_buffers=32MB", port, dir, conns))
	t.Cleanup(func() { pgRun(pgctl, "-D", data, "-m", "immediate", "-w", "stop") })
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"
}

// apiAndBus starts the fake API with latency and opens the RabbitMQ bus of
// namespace ns; both are closed, and the namespace's queues deleted, when
// the test ends (after its processes are killed).
func apiAndBus(t *testing.T, ctx context.Context, latency time.Duration, amqpURL, ns string) (*fakeapi.Running, *rabbitmq.Bus) {
	t.Helper()
	api, err := fakeapi.Start(ctx, fakeapi.Config{Faults: fakeapi.Faults{Latency: fakeapi.Duration(latency)}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	b, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: amqpURL, Namespace: ns, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteQueues(t, amqpURL, b)
	})
	return api, b
}
