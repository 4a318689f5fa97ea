// Package sqlite is the SQLite source adapter (modernc.org/sqlite, no cgo)
// for one-machine use: the same transactional outbox as PostgreSQL, filled
// by triggers that stamp versions from a counter table, claimed with short
// leases, found by polling, and snapshotted in one read transaction.
//
// SQLite serialises writers, so incrementing a counter row inside a trigger
// yields versions that strictly increase in commit order. Triggers list the
// table's columns as they were at install time: re-run install-trigger after
// adding or removing columns.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/source"
)

// Config configures the SQLite source.
type Config struct {
	// Path is the database file.
	Path string
	// BusyTimeout is how long a statement waits for another writer's lock.
	// Default 5s.
	BusyTimeout time.Duration
	// ClaimLease is how long a claim keeps its rows from other claimers.
	// A relay that crashed mid-batch frees its rows after this. Default 2m.
	ClaimLease time.Duration
	// PollInterval is how often Wait checks for new rows. Default 100ms.
	PollInterval time.Duration
	Logger       *slog.Logger
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.BusyTimeout <= 0 {
		c.BusyTimeout = 5 * time.Second
	}
	if c.ClaimLease <= 0 {
		c.ClaimLease = 2 * time.Minute
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Path == "" {
		return setting.Errorf("source", "sqlite source: no database path; want a file such as /abs/path/app.db")
	}
	if strings.ContainsAny(c.Path, "?#") {
		return setting.Errorf("source", "sqlite source: path %q must not contain '?' or '#'", c.Path)
	}
	return nil
}

// Source is the SQLite implementation of source.Source.
type Source struct {
	db  *sql.DB
	cfg Config
	log *slog.Logger

	waitMu   sync.Mutex
	lastSeen int64 // newest outbox id a Wait call reported

	// writeMu queues this process's outbox writes (claims, marks,
	// cleanup) in Go rather than in SQLite's busy handler, whose polling
	// lets a few eager writers starve the application's transactions.
	writeMu sync.Mutex
}

var (
	_ source.Source        = (*Source)(nil)
	_ source.TriggerReader = (*Source)(nil)
)

// Open opens (creating if needed) the database in WAL mode, so snapshots
// and the relay read while the application writes.
func Open(ctx context.Context, cfg Config) (*Source, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// _txlock=immediate makes every read-write transaction take the write
	// lock at BEGIN, so installs never deadlock upgrading a read lock;
	// read-only transactions (snapshots) stay deferred.
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate",
		cfg.Path, cfg.BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite source %s: %w", cfg.Path, err)
	}
	db.SetMaxOpenConns(8)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, setting.Errorf("source", "open SQLite database %s: %w; check the path and its permissions", cfg.Path, err)
	}
	return &Source{db: db, cfg: cfg, log: cfg.Logger}, nil
}

// DB exposes the database handle, for applications and tests that write in
// the same database.
func (s *Source) DB() *sql.DB { return s.db }

// Close closes the database.
func (s *Source) Close() error { return s.db.Close() }

// timeFormat sorts lexicographically in time order, so SQL compares times
// as text. It is what strftime('%Y-%m-%dT%H:%M:%fZ') produces.
const timeFormat = "2006-01-02T15:04:05.000Z"

func ts(t time.Time) string { return t.UTC().Format(timeFormat) }

func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// readVersion takes the version column as SQLite stored it. INTEGER
// affinity turns numeric text into an integer on insert, so anything else
// (a REAL, non-numeric text, a BLOB) is a value the application wrote that
// is no version.
func readVersion(v any) (int64, *source.ColumnFault) {
	fault := func(value, problem string) (int64, *source.ColumnFault) {
		return 0, &source.ColumnFault{Column: "version", Value: value, Problem: problem}
	}
	switch x := v.(type) {
	case int64:
		return x, nil
	case float64:
		return fault(strconv.FormatFloat(x, 'g', -1, 64), "is a real number, not an integer")
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n, nil
		}
		return fault(x, "is text, not an integer")
	case []byte:
		const show = 32 // a version that is a BLOB is shown, not copied whole
		if len(x) > show {
			return fault(fmt.Sprintf("x'%X'... (%d bytes)", x[:show], len(x)), "is a BLOB, not an integer")
		}
		return fault(fmt.Sprintf("x'%X'", x), "is a BLOB, not an integer")
	case nil:
		return fault("NULL", "is NULL")
	default:
		return fault(fmt.Sprint(x), fmt.Sprintf("is a %T, not an integer", x))
	}
}

const nowSQL = `(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`

var migrations = []string{
	// 1: outbox, version counter.
	`CREATE TABLE eventsync_version_counter (
		id    INTEGER PRIMARY KEY CHECK (id = 1),
		value INTEGER NOT NULL
	);
	INSERT INTO eventsync_version_counter (id, value) VALUES (1, 0);
	-- AUTOINCREMENT: ids are never reused after cleanup deletes the newest
	-- rows, so event ids "outbox-<id>" stay unique.
	CREATE TABLE eventsync_outbox (
		id            INTEGER PRIMARY KEY AUTOINCREMENT,
		entity        TEXT    NOT NULL,
		key           TEXT    NOT NULL,
		version       INTEGER NOT NULL,
		op            TEXT    NOT NULL CHECK (op IN ('upsert', 'delete')),
		data          TEXT,
		occurred_at   TEXT    NOT NULL DEFAULT ` + nowSQL + `,
		created_at    TEXT    NOT NULL DEFAULT ` + nowSQL + `,
		sent_at       TEXT,
		claim_token   TEXT,
		claimed_until TEXT
	);
	CREATE INDEX eventsync_outbox_unsent ON eventsync_outbox (id) WHERE sent_at IS NULL;
	CREATE INDEX eventsync_outbox_sent ON eventsync_outbox (sent_at) WHERE sent_at IS NOT NULL;`,
	// 2: the spec each capture trigger was installed with, which
	// snapshots filter their data by (source.SnapshotSpec.FromTrigger).
	`CREATE TABLE eventsync_triggers (
		table_name      TEXT PRIMARY KEY,
		entity          TEXT NOT NULL,
		key_column      TEXT NOT NULL,
		columns         TEXT NOT NULL,
		exclude_columns TEXT NOT NULL
	);`,
}

// Install creates or upgrades the outbox schema inside BEGIN IMMEDIATE,
// which serialises concurrent installers.
func (s *Source) Install(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite source: begin install: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS eventsync_outbox_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT `+nowSQL+`)`); err != nil {
		return fmt.Errorf("sqlite source: create migrations table: %w", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM eventsync_outbox_migrations").Scan(&current); err != nil {
		return fmt.Errorf("sqlite source: read schema version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("sqlite source: outbox schema version %d is newer than this eventsync (%d); upgrade eventsync", current, len(migrations))
	}
	for i := current; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("sqlite source: migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO eventsync_outbox_migrations (version) VALUES (?)", i+1); err != nil {
			return fmt.Errorf("sqlite source: record migration %d: %w", i+1, err)
		}
		s.log.Info("outbox schema migrated", "path", s.cfg.Path, "version", i+1)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite source: commit install: %w", err)
	}
	return nil
}

type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func checkInstalled(ctx context.Context, q queryer) error {
	var n int
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'eventsync_outbox'").Scan(&n); err != nil {
		return fmt.Errorf("sqlite source: check outbox: %w", err)
	}
	if n == 0 {
		return source.ErrNotInstalled
	}
	return nil
}

func tableColumns(ctx context.Context, q queryer, table string) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", table)
	if err != nil {
		return nil, fmt.Errorf("sqlite source: read columns of %q: %w", table, err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("sqlite source: %w", &source.TableNotFoundError{Table: table, Closest: closestTable(ctx, q, table)})
	}
	return cols, nil
}

// closestTable is the application table whose name is nearest to table,
// for a "did you mean"; "" when none is close or the lookup fails.
func closestTable(ctx context.Context, q queryer, table string) string {
	rows, err := q.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' ORDER BY name")
	if err != nil {
		return ""
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if rows.Scan(&n) == nil {
			names = append(names, n)
		}
	}
	return setting.Closest(table, names)
}

func requireColumns(cols []string, table, what string, want ...string) error {
	for _, w := range want {
		if !slices.Contains(cols, w) {
			return fmt.Errorf("sqlite source: %s %q is not a column of %s (columns: %s)", what, w, table, strings.Join(cols, ", "))
		}
	}
	return nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// jsonObject renders json_object('a', alias."a", ...) over the columns that
// pass the filters.
func jsonObject(alias string, cols, include, exclude []string) string {
	var parts []string
	for _, c := range cols {
		if source.FilterData(c, include, exclude) {
			parts = append(parts, quoteLiteral(c)+", "+alias+"."+quoteIdent(c))
		}
	}
	return "json_object(" + strings.Join(parts, ", ") + ")"
}

func triggerNames(table string) []string {
	return []string{"eventsync_ins_" + table, "eventsync_upd_" + table, "eventsync_del_" + table}
}

// triggerSQL builds the three triggers. With capture false they only stamp
// versions (used after remove-trigger, so versions keep increasing while
// nothing is captured and a later snapshot is never considered stale).
func triggerSQL(table string, cols []string, spec source.TriggerSpec, capture bool) []string {
	t := quoteIdent(table)
	k := quoteIdent(spec.KeyColumn)
	names := triggerNames(table)
	const bump = "UPDATE eventsync_version_counter SET value = value + 1 WHERE id = 1;"
	const cur = "(SELECT value FROM eventsync_version_counter WHERE id = 1)"
	stamp := fmt.Sprintf("UPDATE %s SET %s = %s WHERE %s = NEW.%s;", t, source.VersionColumn, cur, k, k)
	entity := quoteLiteral(spec.Entity)
	newDoc := jsonObject("NEW", cols, spec.Columns, spec.ExcludeColumns)
	oldDoc := jsonObject("OLD", cols, spec.Columns, spec.ExcludeColumns)
	upsert := fmt.Sprintf(`INSERT INTO eventsync_outbox (entity, key, version, op, data)
		VALUES (%s, CAST(NEW.%s AS TEXT), %s, 'upsert', %s);`, entity, k, cur, newDoc)

	// Updates fire only when a column other than eventsync_version changes,
	// so the stamping UPDATE inside the triggers never re-fires them.
	var of []string
	for _, c := range cols {
		if c != source.VersionColumn {
			of = append(of, quoteIdent(c))
		}
	}
	ofList := strings.Join(of, ", ")

	if !capture {
		return []string{
			fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s BEGIN %s %s END", quoteIdent(names[0]), t, bump, stamp),
			fmt.Sprintf("CREATE TRIGGER %s AFTER UPDATE OF %s ON %s BEGIN %s %s END", quoteIdent(names[1]), ofList, t, bump, stamp),
		}
	}
	return []string{
		fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s BEGIN %s %s %s END", quoteIdent(names[0]), t, bump, stamp, upsert),
		// Only excluded columns changed: no version, no event. A changed key
		// is a delete of the old entity and an upsert of the new one.
		fmt.Sprintf(`CREATE TRIGGER %s AFTER UPDATE OF %s ON %s
			WHEN NEW.%s IS NOT OLD.%s OR %s IS NOT %s
			BEGIN
				UPDATE eventsync_version_counter SET value = value + 1 WHERE id = 1 AND NEW.%s IS NOT OLD.%s;
				INSERT INTO eventsync_outbox (entity, key, version, op, data)
					SELECT %s, CAST(OLD.%s AS TEXT), %s, 'delete', NULL WHERE NEW.%s IS NOT OLD.%s;
				%s %s %s
			END`,
			quoteIdent(names[1]), ofList, t,
			k, k, newDoc, oldDoc,
			k, k,
			entity, k, cur, k, k,
			bump, stamp, upsert),
		fmt.Sprintf(`CREATE TRIGGER %s AFTER DELETE ON %s BEGIN %s
			INSERT INTO eventsync_outbox (entity, key, version, op, data)
			VALUES (%s, CAST(OLD.%s AS TEXT), %s, 'delete', NULL);
			END`, quoteIdent(names[2]), t, bump, entity, k, cur),
	}
}

func dropTriggers(ctx context.Context, tx *sql.Tx, table string) error {
	for _, n := range triggerNames(table) {
		if _, err := tx.ExecContext(ctx, "DROP TRIGGER IF EXISTS "+quoteIdent(n)); err != nil {
			return fmt.Errorf("sqlite source: drop trigger %s: %w", n, err)
		}
	}
	return nil
}

// InstallTrigger adds eventsync_version (backfilling existing rows with
// fresh versions) and (re)creates the triggers.
func (s *Source) InstallTrigger(ctx context.Context, spec source.TriggerSpec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("sqlite source: %w", err)
	}
	if strings.Contains(spec.Table, ".") {
		return fmt.Errorf("sqlite source: table %q: schema-qualified names are not supported; use the plain table name", spec.Table)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite source: begin install-trigger: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := checkInstalled(ctx, tx); err != nil {
		return err
	}
	cols, err := tableColumns(ctx, tx, spec.Table)
	if err != nil {
		return err
	}
	if err := requireColumns(cols, spec.Table, "key column", spec.KeyColumn); err != nil {
		return err
	}
	if err := requireColumns(cols, spec.Table, "included column", spec.Columns...); err != nil {
		return err
	}
	// A typo in an excluded column would leak the real one: refuse.
	if err := requireColumns(cols, spec.Table, "excluded column", spec.ExcludeColumns...); err != nil {
		return err
	}
	if err := dropTriggers(ctx, tx, spec.Table); err != nil {
		return err
	}
	t := quoteIdent(spec.Table)
	if !slices.Contains(cols, source.VersionColumn) {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s INTEGER NOT NULL DEFAULT 0", t, source.VersionColumn)); err != nil {
			return fmt.Errorf("sqlite source: add %s to %s: %w", source.VersionColumn, spec.Table, err)
		}
		cols = append(cols, source.VersionColumn)
	}
	// Rows written while no trigger existed get fresh versions above every
	// version handed out so far.
	k := quoteIdent(spec.KeyColumn)
	backfill := fmt.Sprintf(`UPDATE %[1]s SET %[2]s = (SELECT value FROM eventsync_version_counter WHERE id = 1) + r.rn
		FROM (SELECT %[3]s AS k, row_number() OVER (ORDER BY %[3]s) AS rn FROM %[1]s WHERE %[2]s = 0) AS r
		WHERE %[1]s.%[3]s = r.k;
		UPDATE eventsync_version_counter SET value = max(value, (SELECT coalesce(max(%[2]s), 0) FROM %[1]s)) WHERE id = 1;`,
		t, source.VersionColumn, k)
	if _, err := tx.ExecContext(ctx, backfill); err != nil {
		return fmt.Errorf("sqlite source: assign versions to existing rows of %s: %w", spec.Table, err)
	}
	for _, q := range triggerSQL(spec.Table, cols, spec, true) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("sqlite source: install trigger on %s: %w", spec.Table, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO eventsync_triggers (table_name, entity, key_column, columns, exclude_columns)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name) DO UPDATE SET entity = excluded.entity, key_column = excluded.key_column,
		columns = excluded.columns, exclude_columns = excluded.exclude_columns`,
		spec.Table, spec.Entity, spec.KeyColumn, strings.Join(spec.Columns, ","), strings.Join(spec.ExcludeColumns, ",")); err != nil {
		return fmt.Errorf("sqlite source: record the trigger of %s: %w; upgrade the outbox schema with \"eventsync outbox install\"", spec.Table, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite source: commit install-trigger: %w", err)
	}
	s.log.Info("outbox trigger installed", "table", spec.Table, "entity", spec.Entity, "key", spec.KeyColumn,
		"columns", spec.Columns, "excluded", spec.ExcludeColumns)
	return nil
}

// installedTrigger reads the spec the capture trigger of table was
// installed with from eventsync_triggers (absent before outbox schema 2).
func installedTrigger(ctx context.Context, q queryer, table string) (source.TriggerSpec, bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'eventsync_triggers'").Scan(&n); err != nil || n == 0 {
		return source.TriggerSpec{}, false, err
	}
	spec := source.TriggerSpec{Table: table}
	var cols, exclude string
	err := q.QueryRowContext(ctx, `SELECT entity, key_column, columns, exclude_columns FROM eventsync_triggers WHERE table_name = ?`, table).
		Scan(&spec.Entity, &spec.KeyColumn, &cols, &exclude)
	if errors.Is(err, sql.ErrNoRows) {
		return spec, false, nil
	}
	if err != nil {
		return spec, false, fmt.Errorf("sqlite source: read the trigger of %s: %w", table, err)
	}
	for _, l := range []struct {
		raw  string
		into *[]string
	}{{cols, &spec.Columns}, {exclude, &spec.ExcludeColumns}} {
		if l.raw != "" {
			*l.into = strings.Split(l.raw, ",")
		}
	}
	return spec, true, nil
}

// Trigger implements source.TriggerReader.
func (s *Source) Trigger(ctx context.Context, table string) (source.TriggerSpec, bool, error) {
	return installedTrigger(ctx, s.db, table)
}

// RemoveTrigger stops capturing the table but keeps stamping versions.
func (s *Source) RemoveTrigger(ctx context.Context, table string) error {
	if err := (source.TriggerSpec{Table: table, Entity: "x", KeyColumn: "x"}).Validate(); err != nil {
		return fmt.Errorf("sqlite source: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite source: begin remove-trigger: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	cols, err := tableColumns(ctx, tx, table)
	if err != nil {
		return err
	}
	if err := dropTriggers(ctx, tx, table); err != nil {
		return err
	}
	if spec, ok, err := installedTrigger(ctx, tx, table); err != nil {
		return err
	} else if ok {
		if _, err := tx.ExecContext(ctx, "DELETE FROM eventsync_triggers WHERE table_name = ?", spec.Table); err != nil {
			return fmt.Errorf("sqlite source: forget the trigger of %s: %w", table, err)
		}
	}
	if slices.Contains(cols, source.VersionColumn) {
		// The key column is needed for the stamping UPDATE; use rowid,
		// which every table that is not WITHOUT ROWID has.
		for _, q := range triggerSQL(table, cols, source.TriggerSpec{KeyColumn: "rowid"}, false) {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("sqlite source: keep version stamping on %s: %w", table, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite source: commit remove-trigger: %w", err)
	}
	return nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Claim leases up to limit unsent rows in one statement. SQLite has no row
// locks to skip, so a claim token and an expiry stand in for FOR UPDATE
// SKIP LOCKED: other claimers pass over leased rows until the lease ends.
func (s *Source) Claim(ctx context.Context, limit int) (source.Batch, error) {
	if limit <= 0 {
		return nil, errors.New("sqlite source: claim limit must be positive")
	}
	token := newToken()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	now := time.Now()
	rows, err := s.db.QueryContext(ctx, `UPDATE eventsync_outbox SET claim_token = ?1, claimed_until = ?2
		WHERE id IN (SELECT id FROM eventsync_outbox
			WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?3)
			ORDER BY id LIMIT ?4)
		RETURNING id, entity, key, version, op, data, occurred_at, created_at`,
		token, ts(now.Add(s.cfg.ClaimLease)), ts(now), limit)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil, source.ErrNotInstalled
		}
		return nil, fmt.Errorf("sqlite source: claim outbox rows: %w", err)
	}
	defer rows.Close()
	b := &batch{src: s, token: token}
	for rows.Next() {
		var r source.Row
		var op, occurred, created string
		var version any
		var data sql.NullString
		// SQLite stores any value in any column (a version of 'abc' is kept
		// as text), so the version is read as whatever it is and checked
		// here: a failed Scan would fail the claim and hold back every row
		// behind this one.
		if err := rows.Scan(&r.ID, &r.Entity, &r.Key, &version, &op, &data, &occurred, &created); err != nil {
			return nil, fmt.Errorf("sqlite source: read outbox row: %w", err)
		}
		r.Op = event.Op(op)
		if data.Valid {
			r.Data = []byte(data.String)
		}
		var fault *source.ColumnFault
		if r.Version, fault = readVersion(version); fault != nil {
			r.Faults = append(r.Faults, *fault)
		}
		if r.Occurred = parseTime(occurred); r.Occurred.IsZero() {
			r.Faults = append(r.Faults, source.ColumnFault{Column: "occurred_at", Value: occurred,
				Problem: "is not a time eventsync reads (RFC 3339 or YYYY-MM-DD HH:MM:SS[.fff], in UTC unless it has an offset)"})
		}
		// created_at is not part of the event; an odd value only leaves it zero.
		r.CreatedAt = parseTime(created)
		b.rows = append(b.rows, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite source: claim outbox rows: %w", err)
	}
	// RETURNING does not promise an order.
	slices.SortFunc(b.rows, func(a, b source.Row) int { return int(a.ID - b.ID) })
	return b, nil
}

type batch struct {
	src   *Source
	token string
	rows  []source.Row
	done  bool
}

func (b *batch) Rows() []source.Row { return b.rows }

func (b *batch) MarkSent(ctx context.Context) error {
	if b.done {
		return errors.New("sqlite source: batch already finished")
	}
	b.done = true
	if len(b.rows) == 0 {
		return nil
	}
	// Rows whose lease expired and were claimed again carry the other
	// claimer's token; that claimer marks them.
	b.src.writeMu.Lock()
	defer b.src.writeMu.Unlock()
	if _, err := b.src.db.ExecContext(ctx, `UPDATE eventsync_outbox SET sent_at = ?, claim_token = NULL, claimed_until = NULL
		WHERE claim_token = ?`, ts(time.Now()), b.token); err != nil {
		return fmt.Errorf("sqlite source: mark %d rows sent: %w", len(b.rows), err)
	}
	return nil
}

func (b *batch) Release(ctx context.Context) error {
	if b.done {
		return nil
	}
	b.done = true
	if len(b.rows) == 0 {
		return nil
	}
	b.src.writeMu.Lock()
	defer b.src.writeMu.Unlock()
	if _, err := b.src.db.ExecContext(ctx, `UPDATE eventsync_outbox SET claim_token = NULL, claimed_until = NULL
		WHERE claim_token = ?`, b.token); err != nil {
		return fmt.Errorf("sqlite source: release claim (rows come back after the lease): %w", err)
	}
	return nil
}

// Cleanup deletes sent rows older than retention in batches.
func (s *Source) Cleanup(ctx context.Context, retention time.Duration, batchSize int) (int64, error) {
	if batchSize <= 0 {
		batchSize = 1000
	}
	cutoff := ts(time.Now().Add(-retention))
	var total int64
	for {
		s.writeMu.Lock()
		res, err := s.db.ExecContext(ctx, `DELETE FROM eventsync_outbox WHERE id IN (
			SELECT id FROM eventsync_outbox WHERE sent_at IS NOT NULL AND sent_at < ? LIMIT ?)`, cutoff, batchSize)
		s.writeMu.Unlock()
		if err != nil {
			return total, fmt.Errorf("sqlite source: delete sent rows: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < int64(batchSize) {
			return total, nil
		}
	}
}

// Backlog counts unsent rows.
func (s *Source) Backlog(ctx context.Context) (source.Backlog, error) {
	var b source.Backlog
	var oldest sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT count(*), min(created_at) FROM eventsync_outbox WHERE sent_at IS NULL").Scan(&b.Rows, &oldest); err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return b, source.ErrNotInstalled
		}
		return b, fmt.Errorf("sqlite source: read backlog: %w", err)
	}
	if oldest.Valid {
		b.Oldest = parseTime(oldest.String)
	}
	return b, nil
}

// Wait polls every PollInterval, up to max, for rows newer than the newest
// one the previous call saw. SQLite serialises writers, so ids become
// visible in order and a larger max(id) means new rows; unlike "any unsent
// row exists", this does not spin while a failing relay backs off.
func (s *Source) Wait(ctx context.Context, max time.Duration) error {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	deadline := time.Now().Add(max)
	for {
		var newest int64
		err := s.db.QueryRowContext(ctx, "SELECT coalesce(max(id), 0) FROM eventsync_outbox").Scan(&newest)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && newest > s.lastSeen {
			s.lastSeen = newest
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		t := time.NewTimer(min(left, s.cfg.PollInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Source) prepareSnapshot(ctx context.Context, q queryer, spec source.SnapshotSpec) (source.SnapshotSpec, []string, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return spec, nil, fmt.Errorf("sqlite source: %w", err)
	}
	cols, err := tableColumns(ctx, q, spec.Table)
	if err != nil {
		return spec, nil, err
	}
	if err := requireColumns(cols, spec.Table, "key column", spec.KeyColumn); err != nil {
		return spec, nil, err
	}
	if err := requireColumns(cols, spec.Table, "version column", spec.VersionColumn); err != nil {
		if spec.VersionColumn == source.VersionColumn {
			return spec, nil, fmt.Errorf("%w; run \"eventsync outbox install-trigger\" for %s first", err, spec.Table)
		}
		return spec, nil, err
	}
	// The data is filtered like the table's capture trigger, recorded at
	// install: lists left empty are the trigger's, a different one is an
	// error.
	if trig, ok, err := installedTrigger(ctx, q, spec.Table); err != nil {
		return spec, nil, err
	} else if ok {
		if spec, err = spec.FromTrigger(trig); err != nil {
			return spec, nil, fmt.Errorf("sqlite source: %w", err)
		}
	}
	if err := requireColumns(cols, spec.Table, "included column", spec.Columns...); err != nil {
		return spec, nil, err
	}
	if err := requireColumns(cols, spec.Table, "excluded column", spec.ExcludeColumns...); err != nil {
		return spec, nil, err
	}
	return spec, cols, nil
}

func snapshotWhere(spec source.SnapshotSpec) string {
	w := "t." + quoteIdent(spec.KeyColumn) + " IS NOT NULL"
	if strings.TrimSpace(spec.Where) != "" {
		w += " AND (" + spec.Where + ")"
	}
	return w
}

// Snapshot reads the table in one read transaction; in WAL mode writers
// continue meanwhile and the transaction keeps seeing the state it started
// with.
func (s *Source) Snapshot(ctx context.Context, spec source.SnapshotSpec, fn func(page []event.Event, lastKey string) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlite source: begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	spec, cols, err := s.prepareSnapshot(ctx, tx, spec)
	if err != nil {
		return err
	}
	k := "t." + quoteIdent(spec.KeyColumn)
	query := fmt.Sprintf(`SELECT CAST(%s AS TEXT), t.%s, %s FROM %s AS t
		WHERE %s AND (?1 IS NULL OR %s > ?1) ORDER BY %s LIMIT ?2`,
		k, quoteIdent(spec.VersionColumn), jsonObject("t", cols, spec.Columns, spec.ExcludeColumns),
		quoteIdent(spec.Table), snapshotWhere(spec), k, k)
	var after any
	if spec.AfterKey != "" {
		after = spec.AfterKey
	}
	for {
		page, lastKey, err := s.snapshotPage(ctx, tx, query, after, spec)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		if err := fn(page, lastKey); err != nil {
			return err
		}
		if len(page) < spec.PageSize {
			return nil
		}
		after = lastKey
	}
}

func (s *Source) snapshotPage(ctx context.Context, tx *sql.Tx, query string, after any, spec source.SnapshotSpec) ([]event.Event, string, error) {
	rows, err := tx.QueryContext(ctx, query, after, spec.PageSize)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite source: snapshot %s: %w", spec.Table, err)
	}
	defer rows.Close()
	page := make([]event.Event, 0, spec.PageSize)
	var lastKey string
	for rows.Next() {
		var key, data string
		var version int64
		if err := rows.Scan(&key, &version, &data); err != nil {
			return nil, "", fmt.Errorf("sqlite source: read snapshot row: %w", err)
		}
		if version < 1 {
			return nil, "", fmt.Errorf("sqlite source: %s key %q has %s %d; versions must be >= 1", spec.Table, key, spec.VersionColumn, version)
		}
		page = append(page, event.Event{
			ID:      fmt.Sprintf("snapshot-%s-%s-%d", spec.Entity, key, version),
			Entity:  spec.Entity,
			Key:     key,
			Version: version,
			Op:      event.OpUpsert,
			Data:    []byte(data),
		})
		lastKey = key
	}
	return page, lastKey, rows.Err()
}

// Count returns the number of rows Snapshot would read.
func (s *Source) Count(ctx context.Context, spec source.SnapshotSpec) (int64, error) {
	spec, _, err := s.prepareSnapshot(ctx, s.db, spec)
	if err != nil {
		return 0, err
	}
	k := "t." + quoteIdent(spec.KeyColumn)
	var after any
	if spec.AfterKey != "" {
		after = spec.AfterKey
	}
	var n int64
	q := fmt.Sprintf("SELECT count(*) FROM %s AS t WHERE %s AND (?1 IS NULL OR %s > ?1)", quoteIdent(spec.Table), snapshotWhere(spec), k)
	if err := s.db.QueryRowContext(ctx, q, after).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite source: count %s: %w", spec.Table, err)
	}
	return n, nil
}
