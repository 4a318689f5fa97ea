package pglimit_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/limitertest"
	"github.com/eventsync/eventsync/throttle/pglimit"
)

func TestConformance(t *testing.T) {
	pool, schema := newPool(t)
	ctx := context.Background()
	l, err := pglimit.New(ctx, pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	// A second limiter on the same schema must find the table in place.
	if _, err := pglimit.New(ctx, pool, schema); err != nil {
		t.Fatalf("second New on an existing schema: %v", err)
	}
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

func FuzzLimiter(f *testing.F) {
	pool, schema := newPool(f)
	l, err := pglimit.New(context.Background(), pool, schema)
	if err != nil {
		f.Fatal(err)
	}
	limitertest.Fuzz(f, func(*testing.T) throttle.Limiter { return l })
}

// newPool connects to the test database with a small pool and names a
// schema of its own, dropped when the test ends.
func newPool(tb testing.TB) (*pgxpool.Pool, string) {
	dsn := testenv.Postgres(tb)
	schema := testenv.UniqueName("pgl")
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", schema, err)
		}
		pool.Close()
	})
	return pool, schema
}

func TestOpen(t *testing.T) {
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("pgl")
	l, err := pglimit.Open(context.Background(), pglimit.Config{DSN: dsn, Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		pool, err := pgxpool.New(context.Background(), dsn)
		if err == nil {
			_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			pool.Close()
		}
	}()
	defer l.Close()
	if ok, _, err := l.Take(context.Background(), "s", 5, 1); err != nil || !ok {
		t.Fatalf("first take: %v %v", ok, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []pglimit.Config{{}, {DSN: "x", Schema: "Bad-Name"}, {DSN: "x", Schema: "ok", MaxConns: -1}} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := (pglimit.Config{DSN: "postgres://x"}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}
