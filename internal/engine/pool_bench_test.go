package engine

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkWorkerPostgresPool: one Worker (concurrency 256, the default)
// with the PostgreSQL store at pool sizes 2 to 32, against a sink that
// answers at once (the store is all the work: the worst case for a small
// pool) and one that takes 50 ms (an API). The default pool size
// (postgres.DefaultMaxConns) is chosen from this: the smallest pool whose
// rate is level with the largest's, so that 16 workers and a relay fit in
// PostgreSQL's default max_connections of 100 (docs/benchmarks.md,
// docs/deploy.md).
//
//	EVENTSYNC_REQUIRE_SERVICES=1 go test -run '^$' -bench WorkerPostgresPool -benchtime 3x -count 3 ./internal/engine
func BenchmarkWorkerPostgresPool(b *testing.B) {
	const concurrency = 256
	for _, sk := range []struct {
		name    string
		latency time.Duration
		n       int
	}{{"zero", 0, zeroLatencyBatch}, {"50ms", 50 * time.Millisecond, concurrency * 20}} {
		for _, conns := range []int32{2, 4, 8, 16, 32} {
			b.Run(fmt.Sprintf("%s/pool=%d", sk.name, conns), func(b *testing.B) {
				st := benchPostgres(b, false, conns)
				benchWorker(b, st, &latencySink{latency: sk.latency}, concurrency, 0, sk.n, false)
			})
		}
	}
}
