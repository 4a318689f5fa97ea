package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dropSchemaOnCleanup removes schema when the test ends, even if it failed.
func dropSchemaOnCleanup(t testing.TB, dsn, schema string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
}

// openIsolated opens a store in a schema of its own.
func openIsolated(t testing.TB, maxConns int32) *postgres.Store {
	t.Helper()
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("storetest")
	dropSchemaOnCleanup(t, dsn, schema)
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Schema: schema, MaxConns: maxConns})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return openIsolated(t, 5) })
}

// Several processes starting at once must all end up with one migrated
// schema and no errors.
func TestConcurrentMigrations(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("migrate")
	dropSchemaOnCleanup(t, dsn, schema)
	const processes = 6
	var (
		wg     sync.WaitGroup
		stores = make([]*postgres.Store, processes)
		errs   = make([]error, processes)
	)
	for i := range processes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = postgres.Open(context.Background(), postgres.Config{DSN: dsn, Schema: schema, MaxConns: 2})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d: %v", i, err)
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	ctx := context.Background()
	var versions []int
	rows, err := stores[0].Pool().Query(ctx, "SELECT version FROM "+pgx.Identifier{schema, "migrations"}.Sanitize()+" ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	versions, err = pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(versions) != "[1]" {
		t.Errorf("migrations recorded %v, want [1]", versions)
	}
	// Every process works on the shared schema: a lease taken through one
	// is seen by another.
	k := store.Key{Entity: "listing", Key: "shared"}
	if _, _, err := stores[1].Acquire(ctx, k, "p1", time.Minute); err != nil {
		t.Fatalf("Acquire through process 1: %v", err)
	}
	if _, _, err := stores[2].Acquire(ctx, k, "p2", time.Minute); !strings.Contains(fmt.Sprint(err), "leased by another worker") {
		t.Errorf("Acquire through process 2 = %v, want locked", err)
	}
	// Opening again later is a no-op.
	again, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Schema: schema})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = again.Close()
}

// A schema migrated by a newer eventsync must not be used by an older one.
func TestSchemaFromTheFuture(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("future")
	dropSchemaOnCleanup(t, dsn, schema)
	ctx := context.Background()
	s, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Schema: schema, MaxConns: 2})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	_, err = s.Pool().Exec(ctx, "INSERT INTO "+pgx.Identifier{schema, "migrations"}.Sanitize()+" (version) VALUES (99)")
	_ = s.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err = postgres.Open(ctx, postgres.Config{DSN: dsn, Schema: schema, MaxConns: 2})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open of a schema at version 99 succeeded")
	}
	if !strings.Contains(err.Error(), "version 99") || !strings.Contains(err.Error(), "upgrade eventsync") {
		t.Errorf("error %q should name the version and the fix", err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		name string
		cfg  postgres.Config
		want []string
	}{
		{"empty DSN", postgres.Config{}, []string{"DSN is empty", "--store"}},
		{"bad schema", postgres.Config{DSN: "postgres://x@127.0.0.1/db", Schema: "Bad-Schema"}, []string{`schema "Bad-Schema"`, "lower-case"}},
		{"unparsable DSN", postgres.Config{DSN: "postgres://x@127.0.0.1:notaport/db"}, []string{"parse DSN", "postgres://user:password@host:5432/db"}},
		{"nothing listening", postgres.Config{DSN: "postgres://x@127.0.0.1:1/db?connect_timeout=2"}, []string{"connect to PostgreSQL at 127.0.0.1:1/db", "is it running", "--store"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := postgres.Open(ctx, tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	bad := fmt.Sprintf("postgres://no_such_user_x@%s:%d/%s?sslmode=disable", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: bad})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with an unknown user succeeded")
	}
	if !strings.Contains(err.Error(), "credentials") || !strings.Contains(err.Error(), "no_such_user_x") {
		t.Errorf("error %q should name the user problem and the fix", err)
	}
}

// BenchmarkAcquireCommit measures the engine's per-event store cost (Acquire
// then Commit, two round trips) from parallel goroutines; RoundTrip is the
// baseline of one trivial statement on the same pool.
func BenchmarkAcquireCommit(b *testing.B) {
	s := openIsolated(b, postgres.DefaultMaxConns)
	b.Run("RoundTrip", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Pool().Exec(context.Background(), "SELECT 1"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("AcquireCommit", func(b *testing.B) { storetest.BenchmarkAcquireCommit(b, s) })
}
