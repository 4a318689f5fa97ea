package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/outbox"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sourcetest"
	"github.com/eventsync/eventsync/source/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

func sample(key string, version int64) event.Event {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return event.Event{Entity: "listing", Key: key, Version: version, Op: event.OpUpsert, Data: json.RawMessage(`{"name":"x","n":1}`), OccurredAt: &at}
}

// check claims everything and compares it with want.
func check(t *testing.T, src source.Source, want []event.Event) {
	t.Helper()
	ctx := context.Background()
	b, err := src.Claim(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	rows := b.Rows()
	if err := b.MarkSent(ctx); err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) {
		t.Fatalf("outbox has %d rows, want %d", len(rows), len(want))
	}
	for i, r := range rows {
		got, w := r.Event(), want[i]
		if got.Entity != w.Entity || got.Key != w.Key || got.Version != w.Version || got.Op != w.Op {
			t.Errorf("row %d: %+v, want %+v", i, got, w)
		}
		if w.OccurredAt != nil && (got.OccurredAt == nil || !got.OccurredAt.Equal(*w.OccurredAt)) {
			t.Errorf("row %d: occurred_at %v, want %v", i, got.OccurredAt, w.OccurredAt)
		}
		if (len(w.Data) == 0) != (len(got.Data) == 0) {
			t.Errorf("row %d: data %s, want %s", i, got.Data, w.Data)
		} else if len(w.Data) > 0 {
			var a, b map[string]any
			_ = json.Unmarshal(got.Data, &a)
			_ = json.Unmarshal(w.Data, &b)
			if len(a) != len(b) || a["name"] != b["name"] {
				t.Errorf("row %d: data %s, want %s", i, got.Data, w.Data)
			}
		}
		if err := got.Validate(); err != nil {
			t.Errorf("row %d: %v", i, err)
		}
	}
}

func TestWritePgxTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := sourcetest.PostgresDSN(t)
	src, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	// Committed: visible. Rolled back: never existed.
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return outbox.Write(ctx, outbox.Pgx(tx), sample("1", 5))
	})
	if err != nil {
		t.Fatal(err)
	}
	rollback := errors.New("rollback")
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := outbox.Write(ctx, outbox.Pgx(tx), sample("2", 6)); err != nil {
			return err
		}
		return rollback
	})
	if !errors.Is(err, rollback) {
		t.Fatal(err)
	}
	del := event.Event{Entity: "listing", Key: "1", Version: 7, Op: event.OpDelete}
	if err := outbox.Write(ctx, outbox.Pgx(conn), del); err != nil {
		t.Fatal(err)
	}
	check(t, src, []event.Event{sample("1", 5), del})
}

func TestWriteDatabaseSQLPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := sourcetest.PostgresDSN(t)
	src, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The version comes from the shared sequence, as docs/outbox.md advises.
	var version int64
	if err := tx.QueryRowContext(ctx, "SELECT nextval('eventsync_version_seq')").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, outbox.SQL(tx), sample("9", version)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	check(t, src, []event.Event{sample("9", version)})
}

func TestWriteSQLite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err := src.DB().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, outbox.SQL(tx), sample("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, outbox.SQL(src.DB()), sample("b", 2)); err != nil {
		t.Fatal(err)
	}
	check(t, src, []event.Event{sample("b", 2)})
}

func TestWriteRejectsInvalidEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "app.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Install(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []event.Event{
		{Entity: "listing", Key: "1", Version: 0, Op: event.OpUpsert, Data: json.RawMessage(`{}`)},
		{Entity: "Listing", Key: "1", Version: 1, Op: event.OpUpsert, Data: json.RawMessage(`{}`)},
		{Entity: "listing", Key: "1", Version: 1, Op: event.OpUpsert},
		{Entity: "listing", Key: "", Version: 1, Op: event.OpDelete},
	} {
		if err := outbox.Write(ctx, outbox.SQL(src.DB()), ev); !errors.Is(err, event.ErrInvalid) {
			t.Errorf("Write(%+v) = %v, want ErrInvalid", ev, err)
		}
	}
	check(t, src, nil)
	// Without the outbox installed the error says what to run.
	bare, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "bare.db"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if err := outbox.Write(ctx, outbox.SQL(bare.DB()), sample("x", 1)); err == nil {
		t.Fatal("Write without an outbox succeeded")
	}
}
