package resync_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/testenv"
)

// benchRows is the table size of BenchmarkSnapshotPublish: the issue's
// 1,000,000 rows by default, EVENTSYNC_RESYNC_BENCH_ROWS to change it.
// Benchmarks only run with -bench, so the million never runs in CI tests.
func benchRows(b *testing.B) int {
	if s := os.Getenv("EVENTSYNC_RESYNC_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("EVENTSYNC_RESYNC_BENCH_ROWS=%q is not a positive number", s)
		}
		return n
	}
	return 1_000_000
}

// memSampler records the heap and the resident set size during a run.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	// start and peak, in bytes
	heapStart, heapPeak, rssStart, rssPeak uint64
}

func startMemSampler() *memSampler {
	runtime.GC()
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	m.heapStart, m.rssStart = heapInUse(), rss()
	m.heapPeak, m.rssPeak = m.heapStart, m.rssStart
	go func() {
		defer close(m.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
			h, r := heapInUse(), rss()
			m.mu.Lock()
			m.heapPeak, m.rssPeak = max(m.heapPeak, h), max(m.rssPeak, r)
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *memSampler) finish() (heapStart, heapPeak, rssStart, rssPeak uint64) {
	close(m.stop)
	<-m.done
	return m.heapStart, m.heapPeak, m.rssStart, m.rssPeak
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// rss reads VmRSS from /proc/self/status (0 where there is none).
func rss() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkSnapshotPublish reads a table of benchRows rows from PostgreSQL
// and publishes it to RabbitMQ with confirms through resync.Run, beside the
// raw amqp091-go publish-with-confirms baseline of as many messages of the
// same size in the same run. Run it once:
//
//	go test -run '^$' -bench BenchmarkSnapshotPublish -benchtime 1x ./internal/resync
func BenchmarkSnapshotPublish(b *testing.B) {
	rows := benchRows(b)
	ctx := context.Background()
	b.Logf("creating a %d-row table", rows)
	src, _ := pgTable(b, rows)
	st := stateStore(b)

	pageSize := resync.DefaultPageSize
	if s := os.Getenv("EVENTSYNC_RESYNC_BENCH_PAGE"); s != "" {
		pageSize, _ = strconv.Atoi(s)
	}
	var baselineRate, resyncRate float64
	for b.Loop() {
		// The baseline runs before and after the resync and the resync is
		// compared with their mean: the shared machine's load drifts.
		before := baseline(b, rows, pageSize, 150)

		// The resync run, on a fresh namespace so the queue starts empty.
		rb := rabbitmqtest.Open(b, rabbitmq.Config{})
		sp := spec()
		sp.Restart, sp.PageSize = true, pageSize
		mem := startMemSampler()
		began := time.Now()
		res, err := resync.Run(ctx, src, rb, st, sp, resync.WithLogger(quiet))
		elapsed := time.Since(began)
		heapStart, heapPeak, rssStart, rssPeak := mem.finish()
		if err != nil {
			b.Fatal(err)
		}
		if res.SegmentRows != int64(rows) {
			b.Fatalf("published %d of %d rows", res.SegmentRows, rows)
		}
		resyncRate = float64(rows) / elapsed.Seconds()
		bodyLen := sampleBodyLen(b, rb)
		b.Logf("resync: %d rows (page %d, events of ~%d bytes) in %s = %.0f events/s; heap in use %d → peak %d MiB; RSS %d → peak %d MiB",
			rows, pageSize, bodyLen, elapsed.Round(time.Millisecond), resyncRate, heapStart>>20, heapPeak>>20, rssStart>>20, rssPeak>>20)

		after := baseline(b, rows, pageSize, bodyLen)
		baselineRate = (before + after) / 2
	}
	b.ReportMetric(resyncRate, "events/s")
	b.ReportMetric(baselineRate, "baseline-msgs/s")
	b.ReportMetric(100*resyncRate/baselineRate, "%-of-baseline")
}

// baseline publishes rows messages of bodyLen bytes with plain amqp091-go
// to a fresh quorum queue, pipelined confirms in batches of pageSize (as
// the resync publishes pages), and returns messages per second.
func baseline(b *testing.B, rows, pageSize, bodyLen int) float64 {
	ctx := context.Background()
	url := testenv.RabbitMQ(b)
	queue := testenv.UniqueName("resync_baseline")
	base, err := rabbitmq.OpenBaseline(url)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = base.Close() }()
	if err := base.DeclareQuorumQueue(queue); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = base.DeleteQueue(queue) }()
	body := []byte(fmt.Sprintf(`{"id":"resync-x","entity":"listing","key":"1","version":1,"op":"upsert","data":{"title":%q}}`, strings.Repeat("t", max(1, bodyLen-90))))
	began := time.Now()
	for left := rows; left > 0; left -= pageSize {
		if err := base.PublishConfirm(ctx, queue, min(left, pageSize), body); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(began)
	rate := float64(rows) / elapsed.Seconds()
	b.Logf("baseline: %d messages of %d bytes in %s = %.0f msgs/s", rows, len(body), elapsed.Round(time.Millisecond), rate)
	return rate
}

func sampleBodyLen(b *testing.B, rb bus.Bus) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := rb.Subscribe(ctx, bus.Resync, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	select {
	case d := <-sub.Deliveries():
		n := len(d.Body())
		_ = d.Release(ctx)
		return n
	case <-ctx.Done():
		b.Fatal("no resync event to measure")
		return 0
	}
}
