package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/setting"
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
	s, _ := openInSchema(t, maxConns, "", testenv.UniqueName("storetest"))
	return s
}

// openInSchema opens a store in schema (dropped when the test ends), with
// param (if any) added to the test DSN, and returns it with the DSN.
func openInSchema(t testing.TB, maxConns int32, param, schema string) (*postgres.Store, string) {
	t.Helper()
	dsn := testenv.Postgres(t)
	dropSchemaOnCleanup(t, dsn, schema)
	if param != "" {
		if strings.Contains(dsn, "?") {
			dsn += "&" + param
		} else {
			dsn += "?" + param
		}
	}
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Schema: schema, MaxConns: maxConns})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, dsn
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return openIsolated(t, 5) })
}

// Without batching every lease statement is its own transaction; both paths
// keep the same contract.
func TestConformanceUnbatched(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openInSchema(t, 5, "eventsync_batch=false", testenv.UniqueName("storetest"))
		return s
	})
}

// A statement PostgreSQL refuses (a key holding a NUL byte, which text
// cannot store) rolls back the batch it travels in; only its own call may
// fail, never the calls batched with it.
func TestABadStatementFailsOnlyItsOwnCall(t *testing.T) {
	t.Parallel()
	s := openIsolated(t, 8)
	ctx := context.Background()
	const n = 200
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			k := store.Key{Entity: "listing", Key: fmt.Sprintf("k%03d", i)}
			if i%50 == 7 {
				k.Key = "bad\x00key"
			}
			_, _, errs[i] = s.Acquire(ctx, k, "w1", time.Minute, 1)
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i%50 == 7 && err == nil:
			t.Errorf("call %d with a NUL byte in its key succeeded", i)
		case i%50 != 7 && err != nil:
			t.Errorf("call %d failed with the bad one: %v", i, err)
		}
	}
}

// Two processes whose batches lock the same rows must not deadlock: each
// batch runs in key order. Two stores on one schema stand for two worker
// processes, taking the same keys in opposite orders.
func TestBatchesOfTwoProcessesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	schema := testenv.UniqueName("storetest")
	a, _ := openInSchema(t, 8, "", schema)
	b, _ := openInSchema(t, 8, "", schema)
	ctx := context.Background()
	keys := make([]store.Key, 40)
	for i := range keys {
		keys[i] = store.Key{Entity: "listing", Key: fmt.Sprintf("hot%02d", i)}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	for p, st := range []*postgres.Store{a, b} {
		for g := range 20 {
			wg.Go(func() {
				for round := range 30 {
					i := (g + round) % len(keys)
					if p == 1 {
						i = len(keys) - 1 - i
					}
					owner := fmt.Sprintf("p%d-g%d", p, g)
					l, st0, err := st.Acquire(ctx, keys[i], owner, time.Minute, 0)
					if errors.Is(err, store.ErrLocked) {
						continue
					}
					if err == nil {
						err = st.Commit(ctx, l, store.Commit{Version: st0.AppliedVersion + 1})
					}
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	for _, err := range failures {
		t.Error(err)
	}
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
	if fmt.Sprint(versions) != "[1 2 3]" {
		t.Errorf("migrations recorded %v, want [1 2 3]", versions)
	}
	// Every process works on the shared schema: a lease taken through one
	// is seen by another.
	k := store.Key{Entity: "listing", Key: "shared"}
	if _, _, err := stores[1].Acquire(ctx, k, "p1", time.Minute, 1); err != nil {
		t.Fatalf("Acquire through process 1: %v", err)
	}
	if _, _, err := stores[2].Acquire(ctx, k, "p2", time.Minute, 2); !strings.Contains(fmt.Sprint(err), "leased by another worker") {
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
		key  string // the setting the error names (internal/setting)
	}{
		{"empty DSN", postgres.Config{}, []string{"DSN is empty", "want postgres://"}, "store"},
		{"bad schema", postgres.Config{DSN: "postgres://x@127.0.0.1/db", Schema: "Bad-Schema"}, []string{`schema "Bad-Schema"`, "lower-case"}, ""},
		{"unparsable DSN", postgres.Config{DSN: "postgres://x@127.0.0.1:notaport/db"}, []string{"parse DSN", "postgres://user:password@host:5432/db"}, "store"},
		{"nothing listening", postgres.Config{DSN: "postgres://x@127.0.0.1:1/db?connect_timeout=2"}, []string{"connect to PostgreSQL at 127.0.0.1:1/db", "is it running"}, "store"},
		{"bad batch option", postgres.Config{DSN: "postgres://x@127.0.0.1:1/db?eventsync_batch=maybe"}, []string{`eventsync_batch="maybe"`, "want true or false"}, "store"},
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
			if got := setting.Key(err); got != tc.key {
				t.Errorf("error %q names setting %q, want %q", err, got, tc.key)
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
