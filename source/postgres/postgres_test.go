package postgres_test

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the suite's application writes
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newEnv(t *testing.T) sourcetest.Env {
	dsn := sourcetest.PostgresDSN(t)
	src, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return sourcetest.Env{Source: src, DB: db}
}

func TestConformance(t *testing.T) {
	sourcetest.Run(t, newEnv, sourcetest.Features{ConcurrentWriters: true, OddRows: oddRows})
}

// oddRows are values timestamptz and jsonb allow that no Row field holds,
// or that only the relay can judge.
var oddRows = []sourcetest.OddRow{
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'a', 1, 'upsert', '{}', 'infinity')`, Fault: "occurred_at"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'b', 1, 'upsert', '{}', '-infinity')`, Fault: "occurred_at"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, created_at) VALUES ('listing', 'c', 1, 'upsert', '{}', 'infinity')`},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'd', 1, 'upsert', '{}', '10000-01-01 00:00:00+00')`},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('Bad Entity', '', 0, 'upsert', '[1]')`},
}

// TestSnapshotWithoutTheOutboxNamesTheFix: a resync of a database where
// "eventsync outbox install" never ran says so, instead of PostgreSQL's
// bare "function eventsync_filter does not exist".
func TestSnapshotWithoutTheOutboxNamesTheFix(t *testing.T) {
	env := newEnv(t)
	if _, err := env.DB.Exec(`CREATE TABLE listings (id bigint PRIMARY KEY, title text, eventsync_version bigint NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := env.DB.Exec(`INSERT INTO listings VALUES (1, 'one', 1)`); err != nil {
		t.Fatal(err)
	}
	err := env.Source.Snapshot(context.Background(), source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"},
		func([]event.Event, string) error { return nil })
	if err == nil || !strings.Contains(err.Error(), `run "eventsync outbox install"`) {
		t.Fatalf("Snapshot without the outbox installed: %v, want an error that says to run \"eventsync outbox install\"", err)
	}
}
