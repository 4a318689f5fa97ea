// Package source defines the source port: the application's database seen
// from eventsync. It installs the transactional outbox (a table, a version
// sequence and per-table triggers), hands unsent outbox rows to the relay in
// claimed batches, and reads consistent snapshots of a table for a resync.
//
// Versions come from ONE mechanism shared by live events and snapshots: the
// trigger install adds a column eventsync_version to the table, and every
// insert or update stamps it with the next value of a database-wide counter
// while the row is locked. A snapshot reads that column; any change the
// snapshot does not see commits later with a larger value, so old snapshot
// data never beats newer live data (see docs/outbox.md).
//
// Adapters live in sub-packages (postgres, sqlite) and all pass the
// conformance suite in source/sourcetest.
package source

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/eventsync/event"
)

// VersionColumn is the column the trigger install adds to a captured table.
const VersionColumn = "eventsync_version"

// OutboxTable is the name of the outbox table in the source database.
const OutboxTable = "eventsync_outbox"

// Source is the port the relay, the resync command and the outbox commands use.
type Source interface {
	// Install creates or upgrades the outbox schema. It is idempotent and
	// safe when several processes run it at once.
	Install(ctx context.Context) error
	// InstallTrigger makes every insert, update and delete of spec.Table
	// write an outbox row. Running it again replaces the trigger (new
	// filters, new columns on SQLite). Install must have run.
	InstallTrigger(ctx context.Context, spec TriggerSpec) error
	// RemoveTrigger stops capturing table. The eventsync_version column is
	// kept so versions keep increasing if the trigger is installed again.
	RemoveTrigger(ctx context.Context, table string) error

	// Claim takes up to limit unsent outbox rows, oldest first, that no
	// other claimer holds. An empty batch has no rows and must still be
	// finished with MarkSent or Release.
	Claim(ctx context.Context, limit int) (Batch, error)
	// Cleanup deletes sent rows older than retention, batchSize rows per
	// statement, and returns how many it deleted.
	Cleanup(ctx context.Context, retention time.Duration, batchSize int) (int64, error)
	// Backlog describes the unsent rows.
	Backlog(ctx context.Context) (Backlog, error)
	// Wait blocks until new outbox rows may exist, at most max. It returns
	// nil both on a notification and on timeout; callers then Claim. Only
	// ctx errors are returned.
	Wait(ctx context.Context, max time.Duration) error

	// Snapshot reads spec.Table in one consistent read transaction, in
	// pages of keyset pagination ordered by the key column, and calls fn
	// with each page and the last key in it. An error from fn stops the
	// snapshot and is returned. Restart after a crash with AfterKey.
	Snapshot(ctx context.Context, spec SnapshotSpec, fn func(page []event.Event, lastKey string) error) error
	// Count returns how many rows Snapshot would read.
	Count(ctx context.Context, spec SnapshotSpec) (int64, error)

	Close() error
}

// Batch is a set of claimed outbox rows. Exactly one of MarkSent or Release
// must be called; both end the claim.
type Batch interface {
	Rows() []Row
	// MarkSent records the rows as published. Call it only after the bus
	// confirmed every row.
	MarkSent(ctx context.Context) error
	// Release gives the rows back unsent, for the next claim.
	Release(ctx context.Context) error
}

// Row is one outbox row.
type Row struct {
	ID        int64
	Entity    string
	Key       string
	Version   int64
	Op        event.Op
	Data      []byte // JSON object, nil for deletes
	Occurred  time.Time
	CreatedAt time.Time // zero when the stored value is not a finite time
	// Faults lists the columns whose stored value the adapter could not
	// read into the fields above (PostgreSQL occurred_at = 'infinity',
	// SQLite version = 'abc'); those fields hold their zero value. Claim
	// returns such a row like any other instead of failing the batch, so
	// one bad row never holds back the rows behind it.
	Faults []ColumnFault
}

// ColumnFault is one outbox column whose stored value does not fit the
// event contract's type for it.
type ColumnFault struct {
	Column  string // outbox column, e.g. "occurred_at"
	Value   string // the stored value as text, e.g. "infinity"
	Problem string // what is wrong with it, e.g. "is not a finite time"
}

func (f ColumnFault) String() string {
	return fmt.Sprintf("%s %q %s", f.Column, f.Value, f.Problem)
}

// Event turns the row into the published event, with id "outbox-<id>".
// It neither validates nor looks at Faults: the relay checks both and
// publishes a row that is not a faithful, valid event as a document the
// worker parks with a reason naming the row (see internal/relay), so a row
// an application wrote badly is neither lost nor blocking.
func (r Row) Event() event.Event {
	ev := event.Event{
		ID:      fmt.Sprintf("outbox-%d", r.ID),
		Entity:  r.Entity,
		Key:     r.Key,
		Version: r.Version,
		Op:      r.Op,
		Data:    r.Data,
	}
	if !r.Occurred.IsZero() {
		t := r.Occurred.UTC()
		ev.OccurredAt = &t
	}
	return ev
}

// Backlog describes the outbox rows not yet published.
type Backlog struct {
	Rows   int64
	Oldest time.Time // created_at of the oldest unsent row; zero when none
}

// TriggerSpec says how to capture one table.
type TriggerSpec struct {
	Table     string // table name, optionally schema-qualified on PostgreSQL
	Entity    string // event entity, [a-z][a-z0-9_]*
	KeyColumn string // column whose value is the event key
	// Columns, when non-empty, is the only columns copied into data.
	Columns []string
	// ExcludeColumns are never copied into data (secrets stay in the DB).
	ExcludeColumns []string
}

// Validate checks the spec before any SQL runs.
func (s TriggerSpec) Validate() error {
	if err := validIdent("table", s.Table, true); err != nil {
		return err
	}
	if !entityPattern.MatchString(s.Entity) {
		return fmt.Errorf("entity %q must match [a-z][a-z0-9_]*", s.Entity)
	}
	if err := validIdent("key column", s.KeyColumn, false); err != nil {
		return err
	}
	return validColumns(s.Columns, s.ExcludeColumns)
}

// SnapshotSpec says what Snapshot and Count read.
type SnapshotSpec struct {
	Table     string
	Entity    string
	KeyColumn string
	// VersionColumn defaults to eventsync_version, the column the trigger
	// install maintains. Use another only if it strictly increases with
	// every change the same way.
	VersionColumn string
	// Where is an optional SQL condition from the operator's configuration
	// (trusted, not user input), e.g. "archived = false".
	Where string
	// AfterKey resumes after this key (exclusive); empty starts at the
	// beginning.
	AfterKey string
	PageSize int // default 1000
	// Columns and ExcludeColumns filter data exactly like TriggerSpec.
	Columns        []string
	ExcludeColumns []string
}

// WithDefaults fills VersionColumn and PageSize.
func (s SnapshotSpec) WithDefaults() SnapshotSpec {
	if s.VersionColumn == "" {
		s.VersionColumn = VersionColumn
	}
	if s.PageSize <= 0 {
		s.PageSize = 1000
	}
	return s
}

// Validate checks the spec (after WithDefaults).
func (s SnapshotSpec) Validate() error {
	if err := validIdent("table", s.Table, true); err != nil {
		return err
	}
	if !entityPattern.MatchString(s.Entity) {
		return fmt.Errorf("entity %q must match [a-z][a-z0-9_]*", s.Entity)
	}
	if err := validIdent("key column", s.KeyColumn, false); err != nil {
		return err
	}
	if err := validIdent("version column", s.VersionColumn, false); err != nil {
		return err
	}
	if s.PageSize <= 0 {
		return errors.New("page size must be positive")
	}
	if strings.Contains(s.Where, ";") {
		return fmt.Errorf("where condition %q must be a single SQL condition without ';'", s.Where)
	}
	return validColumns(s.Columns, s.ExcludeColumns)
}

// FilterData reports whether column belongs in the event data under the
// include and exclude lists. The version column never does.
func FilterData(column string, include, exclude []string) bool {
	if column == VersionColumn {
		return false
	}
	if len(include) > 0 && !slices.Contains(include, column) {
		return false
	}
	return !slices.Contains(exclude, column)
}

var (
	entityPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// Identifiers are restricted to plain SQL names so they can be quoted
	// safely and compared with catalog names without case surprises.
	identPattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

func validIdent(what, name string, qualified bool) error {
	parts := []string{name}
	if qualified {
		parts = strings.Split(name, ".")
		if len(parts) > 2 {
			return fmt.Errorf("%s %q: use table or schema.table", what, name)
		}
	}
	for _, p := range parts {
		if !identPattern.MatchString(p) {
			return fmt.Errorf("%s %q is not a plain SQL name (letters, digits, underscore)", what, name)
		}
	}
	return nil
}

func validColumns(include, exclude []string) error {
	for _, c := range append(slices.Clone(include), exclude...) {
		if err := validIdent("column", c, false); err != nil {
			return err
		}
	}
	for _, c := range include {
		if slices.Contains(exclude, c) {
			return fmt.Errorf("column %q is both included and excluded; drop it from one list", c)
		}
	}
	return nil
}

// ErrNotInstalled is returned when the outbox schema is missing.
var ErrNotInstalled = errors.New("source: outbox schema not installed; install it with Source.Install or run \"eventsync outbox install\"")

// ErrTableNotFound is matched (errors.Is) by the *TableNotFoundError a
// source returns for a spec naming a table its database does not have.
var ErrTableNotFound = errors.New("table not found")

// TableNotFoundError names a missing table and, when one is close, the
// existing table it was probably meant to be.
type TableNotFoundError struct {
	Table   string
	Closest string // "" when no existing table's name is close
}

func (e *TableNotFoundError) Error() string {
	if e.Closest != "" {
		return fmt.Sprintf("table %q not found; did you mean %s?", e.Table, e.Closest)
	}
	return fmt.Sprintf("table %q not found", e.Table)
}

// Is makes errors.Is(err, ErrTableNotFound) true.
func (e *TableNotFoundError) Is(target error) bool { return target == ErrTableNotFound }
