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
	if got, _, err := l.Take(context.Background(), "s", 5, 1, 1); err != nil || got != 1 {
		t.Fatalf("first take: %v %v", got, err)
	}
}

// The table is UNLOGGED, so a take waits for no WAL flush; a table an
// older version created (logged, without last_granted) is switched and
// extended, keeping its rows.
func TestTableIsUnloggedAndOldTablesAreMigrated(t *testing.T) {
	ctx := context.Background()
	pool, schema := newPool(t)
	table := pgx.Identifier{schema, "throttle"}.Sanitize()
	for _, q := range []string{
		`CREATE SCHEMA ` + pgx.Identifier{schema}.Sanitize(),
		`CREATE TABLE ` + table + ` (name text PRIMARY KEY, tat timestamptz, last_ok boolean NOT NULL DEFAULT false,
			held_until timestamptz, hold_rate float8, probe_owner text, probe_until timestamptz)`,
		`INSERT INTO ` + table + ` (name, held_until, hold_rate) VALUES ('old', now() + interval '1 hour', 123)`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	l, err := pglimit.New(ctx, pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	var persistence string
	if err := pool.QueryRow(ctx, `SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = 'throttle'`, schema).Scan(&persistence); err != nil || persistence != "u" {
		t.Fatalf("relpersistence of %s = %q, %v; want u (unlogged)", table, persistence, err)
	}
	if _, rate, err := l.HeldUntil(ctx, "old"); err != nil || rate != 123 {
		t.Fatalf("hold kept through the migration: rate %v, %v; want 123", rate, err)
	}
	if got, _, err := l.Take(ctx, "new", 5, 2, 2); err != nil || got != 2 {
		t.Fatalf("batch take on the migrated table: %v, %v; want 2", got, err)
	}
	if _, err := pglimit.New(ctx, pool, schema); err != nil { // a second start finds it done
		t.Fatal(err)
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
