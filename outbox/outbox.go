// Package outbox lets an application write events to the eventsync outbox
// itself, in the same transaction as the change they describe, instead of
// (or beside) the triggers "eventsync outbox install-trigger" creates. The
// relay publishes committed rows; rolled-back ones never existed.
//
// Works with pgx (pgx.Tx, *pgx.Conn, *pgxpool.Pool) through Pgx and with
// database/sql (*sql.Tx, PostgreSQL or SQLite) through SQL:
//
//	err := outbox.Write(ctx, outbox.Pgx(tx), event.Event{
//		Entity: "listing", Key: "42", Version: version, Op: event.OpUpsert, Data: data,
//	})
//
// The version must strictly increase per (entity, key) across everything
// that writes that entity; on PostgreSQL take it from the shared sequence
// (SELECT nextval('eventsync_version_seq')) while holding the row's lock.
// See docs/outbox.md.
package outbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/eventsync/eventsync/event"
)

// Execer runs one statement in the caller's transaction. Use Pgx or SQL to
// get one.
type Execer interface {
	ExecOutbox(ctx context.Context, query string, args ...any) error
}

// PgxExecer is what pgx.Tx, *pgx.Conn and *pgxpool.Pool have in common.
type PgxExecer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SQLExecer is what *sql.Tx, *sql.DB and *sql.Conn have in common.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

type pgxExecer struct{ q PgxExecer }

func (p pgxExecer) ExecOutbox(ctx context.Context, query string, args ...any) error {
	_, err := p.q.Exec(ctx, query, args...)
	return err
}

type sqlExecer struct{ q SQLExecer }

func (s sqlExecer) ExecOutbox(ctx context.Context, query string, args ...any) error {
	_, err := s.q.ExecContext(ctx, query, args...)
	return err
}

// Pgx adapts a pgx transaction (or connection, or pool).
func Pgx(q PgxExecer) Execer { return pgxExecer{q} }

// SQL adapts a database/sql transaction (or DB, or Conn).
func SQL(q SQLExecer) Execer { return sqlExecer{q} }

// Table is the outbox table; unqualified, so the connection's search_path
// (PostgreSQL) picks the schema "eventsync outbox install" used.
const Table = "eventsync_outbox"

// insert uses $n placeholders, which PostgreSQL drivers and SQLite accept.
const insert = `INSERT INTO ` + Table + ` (entity, key, version, op, data, occurred_at) VALUES ($1, $2, $3, $4, $5, $6)`

// timeFormat is understood by PostgreSQL's timestamptz and sorts as text in
// SQLite, matching the SQLite adapter's columns.
const timeFormat = "2006-01-02T15:04:05.000Z"

// Write validates ev and inserts it into the outbox through tx. ev.ID is
// ignored: the published event's id is "outbox-<row id>". A nil OccurredAt
// means now.
func Write(ctx context.Context, tx Execer, ev event.Event) error {
	if ev.ID == "" {
		ev.ID = "outbox" // the row id is not known yet; Validate needs some id
	}
	if err := ev.Validate(); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	occurred := time.Now()
	if ev.OccurredAt != nil {
		occurred = *ev.OccurredAt
	}
	var data any
	if len(ev.Data) > 0 {
		data = string(ev.Data)
	}
	if err := tx.ExecOutbox(ctx, insert, ev.Entity, ev.Key, ev.Version, string(ev.Op), data, occurred.UTC().Format(timeFormat)); err != nil {
		return fmt.Errorf("outbox: insert %s/%s v%d: %w (is the outbox installed? run \"eventsync outbox install\")", ev.Entity, ev.Key, ev.Version, err)
	}
	return nil
}
