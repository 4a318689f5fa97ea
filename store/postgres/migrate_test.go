package postgres

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
)

// A write in doubt recorded by the previous version (schema 2: with an
// action, without a failure count) is still in doubt after migration 3, with
// no failures counted yet, and the new statements work on its row.
func TestMigration3KeepsWritesInDoubt(t *testing.T) {
	t.Parallel()
	dsn := testenv.Postgres(t)
	schema := testenv.UniqueName("upgrade")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // after the schema is dropped
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	old := &Store{pool: pool, log: slog.New(slog.DiscardHandler), schema: schema}
	if err := old.migrateTo(ctx, 2); err != nil {
		t.Fatalf("build schema 2: %v", err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)
	if _, err := pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "state"}.Sanitize()+`
		(entity, key, applied_version, remote_id, last_event, intent_version, intent_action, intent_token, intent_at, lease_token)
		VALUES ('listing', 'k', 2, 'r2', '{}', 3, 'update', 7, $1, 7)`, at); err != nil {
		t.Fatal(err)
	}

	s, err := Open(ctx, Config{DSN: dsn, Schema: schema, MaxConns: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Open (migrates to 3): %v", err)
	}
	defer s.Close()
	k := store.Key{Entity: "listing", Key: "k"}
	l, st, err := s.Acquire(ctx, k, "w1", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 2 || st.Intent == nil || *st.Intent != (store.Intent{Version: 3, Token: 7, At: st.Intent.At}) || !st.Intent.At.Equal(at) {
		t.Fatalf("state after migration = %+v, intent %+v; want applied 2, intent version 3 token 7 at %s, no failures", st, st.Intent, at)
	}
	if err := s.ReleaseFailed(ctx, l); err != nil {
		t.Fatal(err)
	}
	l, st, err = s.Acquire(ctx, k, "w2", time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Intent == nil || st.Intent.Version != 3 || st.Intent.Failures != 1 {
		t.Fatalf("intent after a failure = %+v, want version 3 with 1 failure", st.Intent)
	}
	if err := s.Commit(ctx, l, store.Commit{Version: 4, RemoteID: "r2"}); err != nil {
		t.Fatal(err)
	}
	if _, st, err = s.Acquire(ctx, k, "w3", time.Minute, 0); err != nil || st.Intent != nil || st.AppliedVersion != 4 {
		t.Fatalf("after the commit: %+v, %v; want applied 4 and no intent", st, err)
	}
}
