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
	dsn := testenv.Postgres(t)
	ctx := context.Background()
	schema := testenv.UniqueName("pgl")
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		pool.Close()
	})
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
