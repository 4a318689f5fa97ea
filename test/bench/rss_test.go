// Package bench holds long, opt-in measurements of real eventsync
// processes (docs/benchmarks.md). Nothing here runs in the normal test run:
// each test skips unless its environment variable is set.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envInt reads a positive integer from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestWorkerRSSMillionQueued measures the resident memory of a real
// `eventsync worker` process at concurrency 1,000 while it drains a million
// queued events into the fake API (50 ms per request) with the Redis store.
// It samples VmRSS from /proc/PID/status every 200 ms and reports the peak.
//
//	EVENTSYNC_BENCH_RSS=1 go test -run TestWorkerRSSMillionQueued -v -timeout 90m ./test/bench
//
// EVENTSYNC_BENCH_RSS_EVENTS (default 1000000) and
// EVENTSYNC_BENCH_RSS_MINUTES (default 60: stop sampling then even if the
// queue is not drained) size the run. The namespace (queues, exchange,
// Redis keys) is deleted afterwards.
func TestWorkerRSSMillionQueued(t *testing.T) {
	if os.Getenv("EVENTSYNC_BENCH_RSS") != "1" {
		t.Skip("set EVENTSYNC_BENCH_RSS=1 to run (publishes a million events and takes many minutes)")
	}
	events := envInt(t, "EVENTSYNC_BENCH_RSS_EVENTS", 1_000_000)
	maxRun := time.Duration(envInt(t, "EVENTSYNC_BENCH_RSS_MINUTES", 60)) * time.Minute
	const concurrency = 1000
	amqpURL := testenv.RabbitMQ(t)
	redisURL := testenv.Redis(t)
	ns := testenv.UniqueName("rss")

	binary := filepath.Join(t.TempDir(), "eventsync")
	build := exec.Command("go", "build", "-o", binary, "github.com/eventsync/eventsync/cmd/eventsync")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build eventsync: %v\n%s", err, out)
	}

	// The worker declares the default retry tiers; so must this bus, or its
	// cleanup would miss their queues.
	b := rabbitmqtest.Open(t, rabbitmq.Config{URL: amqpURL, Namespace: ns, RetryTiers: rabbitmq.DefaultRetryTiers})
	t.Cleanup(func() { deleteRedisPrefix(t, redisURL, ns) })

	apiAddr := freeAddr(t)
	startProc(t, "fakeapi", binary, "fakeapi", "--listen", apiAddr, "--latency", "50ms")
	waitHTTP(t, "http://"+apiAddr+"/v1/listing?page=1&per_page=1")

	start := time.Now()
	publishEvents(t, b, ns, events)
	t.Logf("published %d events in %s", events, time.Since(start).Round(time.Second))

	cfgPath := filepath.Join(t.TempDir(), "eventsync.yaml")
	cfg := fmt.Sprintf("bus: %s\nstore: %s\nnamespace: %s\nworker:\n  concurrency: %d\nlog:\n  level: warn\nsink:\n  defaults:\n    base_url: http://%s\n    timeout: 10s\n  entities:\n    listing:\n      collection: listings\n",
		amqpURL, redisURL, ns, concurrency, apiAddr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := freeAddr(t)
	worker := startProc(t, "worker", binary, "worker", "--config", cfgPath, "--streams", "live", "--admin", adminAddr)

	var peak, last int64
	var samples int
	start = time.Now()
	deadline := start.Add(maxRun)
	nextLog := start
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	settled := int64(0)
	var results map[string]int64
	for settled < int64(events) && time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case err := <-worker.done:
			worker.done <- err
			t.Fatalf("worker exited after %s: %v", time.Since(start).Round(time.Second), err)
		}
		rss, err := vmRSS(worker.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		samples++
		last = rss
		peak = max(peak, rss)
		if s, r, err := workerSettled(adminAddr); err == nil {
			settled, results = s, r
		}
		if time.Now().After(nextLog) {
			t.Logf("%5s settled %7d  VmRSS %6.1f MB  peak %6.1f MB", time.Since(start).Round(time.Second), settled, mb(rss), mb(peak))
			nextLog = time.Now().Add(30 * time.Second)
		}
	}
	elapsed := time.Since(start)
	worker.stop(t)
	t.Logf("RESULT concurrency %d, %d events queued, %d settled in %s (%.0f events/s, results %v); VmRSS peak %.1f MB, last %.1f MB, %d samples",
		concurrency, events, settled, elapsed.Round(time.Second), float64(settled)/elapsed.Seconds(), results, mb(peak), mb(last), samples)
	if settled < int64(events) {
		t.Logf("stopped after %s with %d events still queued (EVENTSYNC_BENCH_RSS_MINUTES)", maxRun, int64(events)-settled)
	}
	if peak >= 200<<20 {
		t.Errorf("worker VmRSS peak %.1f MB, target < 200 MB", mb(peak))
	}
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

// vmRSS reads the resident set size in bytes from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read VmRSS of %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(v) // "123456 kB"
			if len(fields) == 2 && fields[1] == "kB" {
				kb, err := strconv.ParseInt(fields[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
			return 0, fmt.Errorf("unexpected VmRSS line %q", sc.Text())
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// workerStatus is the part of the worker's admin /status we read.
type workerStatus struct {
	Done    map[string]int64 `json:"done"`
	Results map[string]int64 `json:"results"`
}

// workerSettled reads how many live deliveries the worker has settled, and
// their results, from its admin /status endpoint.
func workerSettled(addr string) (int64, map[string]int64, error) {
	st, err := readWorkerStatus(addr)
	return st.Done[string(bus.Live)], st.Results, err
}

func publishEvents(t *testing.T, b bus.Bus, ns string, n int) {
	const chunk = 2000
	msgs := make([]bus.Message, 0, chunk)
	for i := range n {
		key := fmt.Sprintf("%s-%07d", ns, i)
		body := fmt.Sprintf(`{"id":"e-%d","entity":"listing","key":%q,"version":1,"op":"upsert","data":{"title":"listing %d","price":%d}}`, i, key, i, 100+i%900)
		msgs = append(msgs, bus.Message{Body: []byte(body)})
		if len(msgs) == chunk || i == n-1 {
			if err := b.Publish(context.Background(), bus.Live, msgs...); err != nil {
				t.Fatalf("publish after %d events: %v", i+1-len(msgs), err)
			}
			msgs = msgs[:0]
		}
		if (i+1)%100_000 == 0 {
			t.Logf("published %d", i+1)
		}
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func waitHTTP(t *testing.T, url string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer within 30s", url)
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startProc(t *testing.T, name, binary string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		_ = f.Close()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			if len(out) > 3000 {
				out = out[len(out)-3000:]
			}
			t.Logf("--- log of %s (tail):\n%s", name, out)
		}
	})
	return p
}

// stop sends SIGTERM and waits up to a minute for a clean exit.
func (p *proc) stop(t *testing.T) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(time.Minute):
		t.Errorf("%s did not stop within a minute of SIGTERM", p.name)
	}
}

// deleteRedisPrefix removes every key the worker wrote under prefix.
func deleteRedisPrefix(t *testing.T, url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+":*", 5000).Iterator()
	var names []string
	deleted := 0
	flush := func() {
		if len(names) == 0 {
			return
		}
		if err := rdb.Unlink(ctx, names...).Err(); err != nil {
			t.Errorf("cleanup: unlink: %v", err)
		}
		deleted += len(names)
		names = names[:0]
	}
	for iter.Next(ctx) {
		names = append(names, iter.Val())
		if len(names) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scan: %v", err)
	}
	t.Logf("cleanup: deleted %d Redis keys under %s", deleted, prefix)
}
