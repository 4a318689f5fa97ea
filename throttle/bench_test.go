package throttle_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/natslimit"
	"github.com/eventsync/eventsync/throttle/pglimit"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

// nopSink answers every call at once.
type nopSink struct{}

func (nopSink) Create(context.Context, sink.Record) (string, error)      { return "id", nil }
func (nopSink) Update(context.Context, string, sink.Record) error        { return nil }
func (nopSink) Delete(context.Context, string, string) error             { return nil }
func (nopSink) Lookup(context.Context, string, string) ([]string, error) { return nil, nil }

// countingLimiter counts the round trips a throttle makes to its limiter.
type countingLimiter struct {
	throttle.Limiter
	trips atomic.Int64
}

func (c *countingLimiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	c.trips.Add(1)
	return c.Limiter.Take(ctx, name, rate, burst, n)
}

func (c *countingLimiter) Hold(ctx context.Context, name string, until time.Time, rate float64) error {
	c.trips.Add(1)
	return c.Limiter.Hold(ctx, name, until, rate)
}

func (c *countingLimiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	c.trips.Add(1)
	return c.Limiter.HeldUntil(ctx, name)
}

func (c *countingLimiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	c.trips.Add(1)
	return c.Limiter.TryProbe(ctx, name, owner, ttl)
}

// BenchmarkSinkZeroLatency is the throttle's own cost: 256 callers (the
// worker's default concurrency) call through one throttle.Sink in front of
// a sink that answers at once and never refuses, beside the same callers
// on the bare sink. "learned" is the default configuration (no rate
// known); "rate" configures one far above what the callers reach, so every
// call needs a token. It reports calls/s and limiter round trips per call.
//
//	EVENTSYNC_REQUIRE_SERVICES=1 go test -run '^$' -bench BenchmarkSinkZeroLatency -benchtime 20000x ./throttle
func BenchmarkSinkZeroLatency(b *testing.B) {
	b.Run("bare", func(b *testing.B) { benchCalls(b, nopSink{}, nil) })
	limiters := []struct {
		name string
		open func(b *testing.B) throttle.Limiter
	}{
		{"memory", func(*testing.B) throttle.Limiter { return throttle.NewMemoryLimiter(nil) }},
		{"redis", benchRedisLimiter},
		{"postgres", benchPostgresLimiter},
		{"nats", benchNATSLimiter},
	}
	for _, l := range limiters {
		for _, mode := range []struct {
			name string
			cfg  throttle.Config
		}{{"learned", throttle.Config{}}, {"rate", throttle.Config{Rate: throttle.MaxRate}}} {
			b.Run(l.name+"/"+mode.name, func(b *testing.B) {
				lim := &countingLimiter{Limiter: l.open(b)}
				s, err := throttle.New(nopSink{}, mode.cfg, throttle.Options{Name: testenv.UniqueName("bench"), Limiter: lim, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				benchCalls(b, s, lim)
			})
		}
	}
}

// benchCalls makes b.N calls from 256 goroutines.
func benchCalls(b *testing.B, s sink.Sink, lim *countingLimiter) {
	b.SetParallelism(max(1, 256/runtime.GOMAXPROCS(0)))
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := s.Update(ctx, "r", record(i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	if lim != nil {
		b.ReportMetric(float64(lim.trips.Load())/float64(b.N), "trips/call")
	}
}

func benchRedisLimiter(b *testing.B) throttle.Limiter {
	url := testenv.Redis(b)
	prefix := testenv.UniqueName("bench")
	l, err := redislimit.Open(context.Background(), redislimit.Config{URL: url, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = l.Close()
		opts, err := goredis.ParseURL(url)
		if err != nil {
			return
		}
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		keys, _ := rdb.Keys(context.Background(), prefix+":*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	return l
}

func benchPostgresLimiter(b *testing.B) throttle.Limiter {
	dsn := testenv.Postgres(b)
	schema := testenv.UniqueName("bench")
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		pool.Close()
	})
	l, err := pglimit.New(context.Background(), pool, schema)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func benchNATSLimiter(b *testing.B) throttle.Limiter {
	url, bucket := testenv.NATS(b), testenv.UniqueName("bench")
	l, err := natslimit.Open(context.Background(), natslimit.Config{URL: url, Bucket: bucket, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if nc, err := nats.Connect(url); err == nil {
			if js, err := nc.JetStream(); err == nil {
				_ = js.DeleteKeyValue(bucket + "_throttle")
			}
			nc.Close()
		}
		_ = l.Close()
	})
	return l
}
