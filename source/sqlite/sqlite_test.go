package sqlite_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/source/sourcetest"
	"github.com/eventsync/eventsync/source/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newEnv(t *testing.T) sourcetest.Env {
	src, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return sourcetest.Env{Source: src, DB: src.DB()}
}

func TestConformance(t *testing.T) {
	sourcetest.Run(t, newEnv, sourcetest.Features{OddRows: oddRows})
}

// oddRows are values SQLite's dynamic typing lets an application store that
// no Row field holds, or that only the relay can judge.
var oddRows = []sourcetest.OddRow{
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'a', 'abc', 'upsert', '{}')`, Fault: "version"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'b', 1.5, 'upsert', '{}')`, Fault: "version"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'c', x'0102', 'upsert', '{}')`, Fault: "version"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, occurred_at) VALUES ('listing', 'd', 1, 'upsert', '{}', 'yesterday')`, Fault: "occurred_at"},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data, created_at) VALUES ('listing', 'e', 1, 'upsert', '{}', 'yesterday')`},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'f', 1, 'upsert', 'not json')`},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', CAST(x'ff' AS TEXT), 1, 'upsert', x'ff')`},
	{Insert: `INSERT INTO eventsync_outbox (entity, key, version, op, data) VALUES ('listing', 'g', '7', 'upsert', '{}')`},
}
