// Package postgres is the PostgreSQL source adapter: a transactional outbox
// filled by triggers, claimed by relays with FOR UPDATE SKIP LOCKED, woken
// by LISTEN/NOTIFY with a polling fallback, and consistent snapshots in one
// REPEATABLE READ transaction for resyncs.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/source"
)

// Config configures the PostgreSQL source.
type Config struct {
	// DSN is a postgres:// URL or key=value connection string.
	DSN string
	// Schema holds the outbox table, sequence and functions. Empty means the
	// connection's current schema (the first existing one on search_path,
	// usually public). A named schema is created if missing.
	Schema string
	// MaxConns bounds the pool; each concurrent claim holds one connection
	// while its batch is published. Default 8.
	MaxConns int32
	Logger   *slog.Logger
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 8
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.DSN == "" {
		return setting.Errorf("source", "postgres source: no DSN; want postgres://user@host:5432/db")
	}
	if c.Schema != "" && !plainName(c.Schema) {
		return fmt.Errorf("postgres source: schema %q is not a plain SQL name (letters, digits, underscore)", c.Schema)
	}
	return nil
}

func plainName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

// Source is the PostgreSQL implementation of source.Source.
type Source struct {
	pool *pgxpool.Pool
	n    names
	log  *slog.Logger

	mu       sync.Mutex // guards listener; Wait is called by one goroutine at a time
	listener *pgx.Conn
}

var (
	_ source.Source        = (*Source)(nil)
	_ source.TriggerReader = (*Source)(nil)
)

// Open connects and resolves the outbox schema. It does not install
// anything; call Install for that.
func Open(ctx context.Context, cfg Config) (_ *Source, err error) {
	secrets := redact.NewScrubber(cfg.DSN) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, setting.Errorf("source", "postgres source: parse DSN: %w; want postgres://user:pass@host:5432/db", err)
	}
	pc.MaxConns = cfg.MaxConns
	host := pc.ConnConfig.Host
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres source at %s: %w", host, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		// TLS settings live in the DSN (sslmode, sslrootcert, sslcert,
		// sslkey), read by pgx as libpq reads them.
		if cerr := tlsconf.ExplainNamed(err, tlsconf.PostgresNames("source"), tlsconf.DSNParam(cfg.DSN, "sslrootcert"), tlsconf.DSNParam(cfg.DSN, "sslcert")); tlsconf.IsCertificateProblem(cerr) {
			return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: TLS handshake failed: %w", host, pc.ConnConfig.Port, cerr)
		}
		return nil, setting.Errorf("source", "connect to PostgreSQL at %s:%d: %w; is it running and are the credentials right?", host, pc.ConnConfig.Port, err)
	}
	schema := cfg.Schema
	if schema == "" {
		var cur *string
		if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&cur); err != nil {
			pool.Close()
			return nil, fmt.Errorf("postgres source: read current schema: %w", err)
		}
		if cur == nil {
			pool.Close()
			return nil, errors.New("postgres source: no schema on search_path exists; create one or set search_path in the DSN")
		}
		schema = *cur
	} else if _, err := pool.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize()); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres source: create schema %q: %w", schema, err)
	}
	return &Source{pool: pool, n: newNames(schema), log: cfg.Logger}, nil
}

// Schema returns the schema holding the outbox.
func (s *Source) Schema() string { return s.n.schema }

// Pool exposes the connection pool, for applications and tests that write
// in the same database.
func (s *Source) Pool() *pgxpool.Pool { return s.pool }

// Close releases the listener and the pool.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.listener != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.listener.Close(ctx)
		cancel()
		s.listener = nil
	}
	s.mu.Unlock()
	s.pool.Close()
	return nil
}

// lockSchema serialises installs on this schema across processes. The
// transaction-scoped advisory lock is released at commit or rollback.
func (s *Source) lockSchema(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('eventsync_outbox'), hashtext($1))", s.n.schema)
	if err != nil {
		return fmt.Errorf("postgres source: take install lock: %w", err)
	}
	return nil
}

// Install creates or upgrades the outbox schema.
func (s *Source) Install(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.lockSchema(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.n.migrations+` (
			version    int PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("postgres source: create migrations table: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+s.n.migrations).Scan(&current); err != nil {
			return fmt.Errorf("postgres source: read schema version: %w", err)
		}
		steps := s.n.migrationSteps()
		if current > len(steps) {
			return fmt.Errorf("postgres source: outbox schema version %d is newer than this eventsync (%d); upgrade eventsync", current, len(steps))
		}
		for i := current; i < len(steps); i++ {
			if _, err := tx.Exec(ctx, steps[i]); err != nil {
				return fmt.Errorf("postgres source: migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO "+s.n.migrations+" (version) VALUES ($1)", i+1); err != nil {
				return fmt.Errorf("postgres source: record migration %d: %w", i+1, err)
			}
			s.log.Info("outbox schema migrated", "schema", s.n.schema, "version", i+1)
		}
		return nil
	})
}

func (s *Source) checkInstalled(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	var ok bool
	if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", s.n.outbox).Scan(&ok); err != nil {
		return fmt.Errorf("postgres source: check outbox: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w (schema %q)", source.ErrNotInstalled, s.n.schema)
	}
	return nil
}

type tableInfo struct {
	oid       uint32
	qualified string            // quoted schema.table
	columns   map[string]string // column name -> SQL type
}

type querier interface {
	QueryRow(context.Context, string, ...any) pgx.Row
	Query(context.Context, string, ...any) (pgx.Rows, error)
}

func resolveTable(ctx context.Context, q querier, table string) (tableInfo, error) {
	var ti tableInfo
	var nsp, rel string
	err := q.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p')`, table).Scan(&ti.oid, &nsp, &rel)
	if errors.Is(err, pgx.ErrNoRows) {
		return ti, missingTable(ctx, q, table)
	}
	if err != nil {
		return ti, fmt.Errorf("postgres source: look up table %q: %w", table, err)
	}
	ti.qualified = pgx.Identifier{nsp, rel}.Sanitize()
	rows, err := q.Query(ctx, `SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, ti.oid)
	if err != nil {
		return ti, fmt.Errorf("postgres source: read columns of %q: %w", table, err)
	}
	ti.columns = map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return ti, err
		}
		ti.columns[name] = typ
	}
	return ti, rows.Err()
}

// missingTable explains a table to_regclass did not find: the closest name
// among the tables it could have found, else the schemas it looked in.
func missingTable(ctx context.Context, q querier, table string) error {
	schema, qualified := "", false
	if i := strings.IndexByte(table, '.'); i >= 0 {
		schema, qualified = table[:i], true
	}
	// Both lookups are courtesies: a failure leaves them out of the message.
	var names []string
	rows, err := q.Query(ctx, `SELECT CASE WHEN $1 THEN n.nspname || '.' || c.relname ELSE c.relname END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND CASE WHEN $1 THEN n.nspname = $2 ELSE n.nspname = ANY(current_schemas(false)) END
		ORDER BY 1`, qualified, schema)
	if err == nil {
		names, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	nf := &source.TableNotFoundError{Table: table, Closest: setting.Closest(table, names)}
	var searched string
	if !qualified && nf.Closest == "" {
		_ = q.QueryRow(ctx, "SELECT array_to_string(current_schemas(false), ', ')").Scan(&searched)
	}
	if searched == "" {
		return fmt.Errorf("postgres source: %w", nf)
	}
	return fmt.Errorf("postgres source: %w in the search_path (%s)", nf, searched)
}

func (ti tableInfo) requireColumns(table, what string, cols ...string) error {
	for _, c := range cols {
		if _, ok := ti.columns[c]; !ok {
			names := make([]string, 0, len(ti.columns))
			for n := range ti.columns {
				names = append(names, n)
			}
			slices.Sort(names)
			return fmt.Errorf("postgres source: %s %q is not a column of %s (columns: %s)", what, c, table, strings.Join(names, ", "))
		}
	}
	return nil
}

// InstallTrigger adds eventsync_version to the table (if absent) and
// (re)creates the stamp and capture triggers.
func (s *Source) InstallTrigger(ctx context.Context, spec source.TriggerSpec) error {
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("postgres source: %w", err)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.lockSchema(ctx, tx); err != nil {
			return err
		}
		if err := s.checkInstalled(ctx, tx); err != nil {
			return err
		}
		ti, err := resolveTable(ctx, tx, spec.Table)
		if err != nil {
			return err
		}
		if err := ti.requireColumns(spec.Table, "key column", spec.KeyColumn); err != nil {
			return err
		}
		if err := ti.requireColumns(spec.Table, "included column", spec.Columns...); err != nil {
			return err
		}
		// A typo in an excluded column would leak the real one: refuse.
		if err := ti.requireColumns(spec.Table, "excluded column", spec.ExcludeColumns...); err != nil {
			return err
		}
		if _, ok := ti.columns[source.VersionColumn]; !ok {
			// The volatile default rewrites the table once, giving every
			// existing row its own version so a first snapshot works.
			if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s bigint NOT NULL DEFAULT nextval(%s)",
				ti.qualified, source.VersionColumn, s.n.seqLiteral)); err != nil {
				return fmt.Errorf("postgres source: add %s to %s: %w", source.VersionColumn, spec.Table, err)
			}
		}
		stmts := []string{
			"DROP TRIGGER IF EXISTS eventsync_stamp ON " + ti.qualified,
			fmt.Sprintf("CREATE TRIGGER eventsync_stamp BEFORE INSERT OR UPDATE ON %s FOR EACH ROW EXECUTE FUNCTION %s()",
				ti.qualified, s.n.stampFn),
			"DROP TRIGGER IF EXISTS " + captureTrigger + " ON " + ti.qualified,
			fmt.Sprintf("CREATE TRIGGER "+captureTrigger+" AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)",
				ti.qualified, s.n.captureFn, triggerArgs(spec.Entity, spec.KeyColumn, spec.Columns, spec.ExcludeColumns)),
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("postgres source: install trigger on %s: %w", spec.Table, err)
			}
		}
		s.log.Info("outbox trigger installed", "table", ti.qualified, "entity", spec.Entity, "key", spec.KeyColumn,
			"columns", spec.Columns, "excluded", spec.ExcludeColumns)
		return nil
	})
}

// RemoveTrigger drops the capture trigger. The stamp trigger and
// eventsync_version stay, so versions keep increasing while nothing is
// captured and a later snapshot is never mistaken for stale data.
func (s *Source) RemoveTrigger(ctx context.Context, table string) error {
	if err := (source.TriggerSpec{Table: table, Entity: "x", KeyColumn: "x"}).Validate(); err != nil {
		return fmt.Errorf("postgres source: %w", err)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.lockSchema(ctx, tx); err != nil {
			return err
		}
		ti, err := resolveTable(ctx, tx, table)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+captureTrigger+" ON "+ti.qualified); err != nil {
			return fmt.Errorf("postgres source: remove trigger from %s: %w", table, err)
		}
		return nil
	})
}

// Claim locks up to limit unsent rows with FOR UPDATE SKIP LOCKED inside a
// transaction that stays open until MarkSent or Release. Rows committed
// late (with ids below ones already sent) are still unsent and get picked
// up: nothing depends on id order for correctness.
func (s *Source) Claim(ctx context.Context, limit int) (source.Batch, error) {
	if limit <= 0 {
		return nil, errors.New("postgres source: claim limit must be positive")
	}
	// Losing a mark-sent commit in a database crash only re-publishes the
	// batch (duplicates the versions absorb), so it need not wait for the
	// WAL flush; setting that in BEGIN saves a round trip.
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: "BEGIN; SET LOCAL synchronous_commit = off"})
	if err != nil {
		return nil, fmt.Errorf("postgres source: begin claim: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT id, entity, key, version, op, data, occurred_at, created_at
		FROM `+s.n.outbox+` WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
	if err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, s.claimErr(err)
	}
	b := &batch{tx: tx, outbox: s.n.outbox}
	for rows.Next() {
		var r source.Row
		var cols outboxColumns
		// pgx ends the whole result at the first value it cannot scan, so
		// every column is read into a type that takes any stored value.
		if err := rows.Scan(&r.ID, &cols.entity, &cols.key, &cols.version, &cols.op, &r.Data, &cols.occurred, &cols.created); err != nil {
			rows.Close()
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("postgres source: read outbox row: %w", err)
		}
		cols.fill(&r)
		b.rows = append(b.rows, r)
		b.ids = append(b.ids, r.ID)
	}
	if err := rows.Err(); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return nil, s.claimErr(err)
	}
	return b, nil
}

// outboxColumns holds one outbox row as scanned, before it becomes a
// source.Row. timestamptz allows 'infinity' and '-infinity', which no
// time.Time holds, and a NULL is possible once someone relaxed the schema.
type outboxColumns struct {
	entity, key, op   pgtype.Text
	version           pgtype.Int8
	occurred, created pgtype.Timestamptz
}

// fill copies the columns into r and records the values that do not fit.
func (c outboxColumns) fill(r *source.Row) {
	text := func(col string, v pgtype.Text) string {
		if !v.Valid {
			r.Faults = append(r.Faults, source.ColumnFault{Column: col, Value: "NULL", Problem: "is NULL"})
		}
		return v.String
	}
	r.Entity = text("entity", c.entity)
	r.Key = text("key", c.key)
	r.Op = event.Op(text("op", c.op))
	if c.version.Valid {
		r.Version = c.version.Int64
	} else {
		r.Faults = append(r.Faults, source.ColumnFault{Column: "version", Value: "NULL", Problem: "is NULL"})
	}
	switch {
	case !c.occurred.Valid:
		r.Faults = append(r.Faults, source.ColumnFault{Column: "occurred_at", Value: "NULL", Problem: "is NULL"})
	case c.occurred.InfinityModifier != pgtype.Finite:
		r.Faults = append(r.Faults, source.ColumnFault{Column: "occurred_at", Value: c.occurred.InfinityModifier.String(), Problem: "is not a finite time"})
	default:
		r.Occurred = c.occurred.Time
	}
	// created_at is not part of the event; an odd value only leaves it zero.
	if c.created.Valid && c.created.InfinityModifier == pgtype.Finite {
		r.CreatedAt = c.created.Time
	}
}

func (s *Source) claimErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return fmt.Errorf("%w (schema %q)", source.ErrNotInstalled, s.n.schema)
	}
	return fmt.Errorf("postgres source: claim outbox rows: %w", err)
}

type batch struct {
	tx     pgx.Tx
	outbox string
	rows   []source.Row
	ids    []int64
	done   bool
}

func (b *batch) Rows() []source.Row { return b.rows }

func (b *batch) MarkSent(ctx context.Context) error {
	if b.done {
		return errors.New("postgres source: batch already finished")
	}
	b.done = true
	if len(b.ids) > 0 {
		if _, err := b.tx.Exec(ctx, "UPDATE "+b.outbox+" SET sent_at = now() WHERE id = ANY($1)", b.ids); err != nil {
			_ = b.tx.Rollback(context.WithoutCancel(ctx))
			return fmt.Errorf("postgres source: mark %d rows sent: %w", len(b.ids), err)
		}
	}
	if err := b.tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres source: commit sent rows: %w", err)
	}
	return nil
}

func (b *batch) Release(ctx context.Context) error {
	if b.done {
		return nil
	}
	b.done = true
	if err := b.tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("postgres source: release claim: %w", err)
	}
	return nil
}

// Cleanup deletes sent rows older than retention in batches, so a large
// backlog never holds long locks or bloats one transaction.
func (s *Source) Cleanup(ctx context.Context, retention time.Duration, batchSize int) (int64, error) {
	if batchSize <= 0 {
		batchSize = 1000
	}
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.n.outbox+` WHERE id IN (
			SELECT id FROM `+s.n.outbox+` WHERE sent_at < now() - make_interval(secs => $1) LIMIT $2)`,
			retention.Seconds(), batchSize)
		if err != nil {
			return total, fmt.Errorf("postgres source: delete sent rows: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batchSize) {
			return total, nil
		}
	}
}

// Backlog counts unsent rows using the partial index.
func (s *Source) Backlog(ctx context.Context) (source.Backlog, error) {
	var b source.Backlog
	var oldest *time.Time
	// A created_at of 'infinity' or '-infinity' fits no time.Time and says
	// nothing about the lag: it is left out of the minimum.
	err := s.pool.QueryRow(ctx, "SELECT count(*), min(created_at) FILTER (WHERE isfinite(created_at)) FROM "+s.n.outbox+" WHERE sent_at IS NULL").Scan(&b.Rows, &oldest)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
			return b, fmt.Errorf("%w (schema %q)", source.ErrNotInstalled, s.n.schema)
		}
		return b, fmt.Errorf("postgres source: read backlog: %w", err)
	}
	if oldest != nil {
		b.Oldest = *oldest
	}
	return b, nil
}

// Wait listens on the schema's outbox channel. The listening connection is
// kept between calls so notifications sent while the caller was busy are
// queued, not lost. When the connection drops, the next call reconnects and
// returns at once, since rows may have arrived while nobody listened; when
// reconnecting fails, Wait degrades to sleeping max (polling).
func (s *Source) Wait(ctx context.Context, max time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil || s.listener.IsClosed() {
		if err := s.listen(ctx); err != nil {
			s.log.Warn("outbox LISTEN unavailable, polling instead", "err", err, "interval", max)
			return sleep(ctx, max)
		}
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	_, err := s.listener.WaitForNotification(wctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if wctx.Err() != nil {
		// Timeout: pgx keeps the connection usable after a deadline-induced
		// read timeout, so it keeps listening for the next call.
		return nil
	}
	s.log.Warn("outbox LISTEN connection lost, reconnecting", "err", err)
	s.closeListener()
	return nil
}

func (s *Source) listen(ctx context.Context) error {
	s.closeListener()
	cfg := s.pool.Config().ConnConfig.Copy()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(cctx, "LISTEN "+pgx.Identifier{s.n.channel}.Sanitize()); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return err
	}
	s.listener = conn
	return nil
}

func (s *Source) closeListener() {
	if s.listener != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = s.listener.Close(ctx)
		cancel()
		s.listener = nil
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// snapshotQuery builds the page query; $1 is the limit, $2 the key to
// resume after (cast to the key column's type so ordering is native).
func (s *Source) snapshotQuery(ti tableInfo, spec source.SnapshotSpec, count bool) string {
	key := "t." + pgx.Identifier{spec.KeyColumn}.Sanitize()
	ver := "t." + pgx.Identifier{spec.VersionColumn}.Sanitize()
	where := []string{key + " IS NOT NULL"}
	if strings.TrimSpace(spec.Where) != "" {
		where = append(where, "("+spec.Where+")")
	}
	var b strings.Builder
	if count {
		b.WriteString("SELECT count(*) FROM " + ti.qualified + " t WHERE " + strings.Join(where, " AND "))
		if spec.AfterKey != "" {
			fmt.Fprintf(&b, " AND %s > CAST($1 AS %s)", key, ti.columns[spec.KeyColumn])
		}
		return b.String()
	}
	fmt.Fprintf(&b, "SELECT %s::text, %s::bigint, %s(to_jsonb(t), $2::text[], $3::text[]) FROM %s t WHERE %s",
		key, ver, s.n.filterFn, ti.qualified, strings.Join(where, " AND "))
	fmt.Fprintf(&b, " AND ($4::text IS NULL OR %s > CAST($4 AS %s))", key, ti.columns[spec.KeyColumn])
	fmt.Fprintf(&b, " ORDER BY %s LIMIT $1", key)
	return b.String()
}

func (s *Source) prepareSnapshot(ctx context.Context, q querier, spec source.SnapshotSpec) (source.SnapshotSpec, tableInfo, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return spec, tableInfo{}, fmt.Errorf("postgres source: %w", err)
	}
	ti, err := resolveTable(ctx, q, spec.Table)
	if err != nil {
		return spec, ti, err
	}
	if err := ti.requireColumns(spec.Table, "key column", spec.KeyColumn); err != nil {
		return spec, ti, err
	}
	if err := ti.requireColumns(spec.Table, "version column", spec.VersionColumn); err != nil {
		if spec.VersionColumn == source.VersionColumn {
			return spec, ti, fmt.Errorf("%w; run \"eventsync outbox install-trigger\" for %s first", err, spec.Table)
		}
		return spec, ti, err
	}
	// The snapshot filters its data through the outbox's function, which
	// "eventsync outbox install" creates: without it the query would fail
	// with a bare "function does not exist".
	var installed bool
	if err := q.QueryRow(ctx, `SELECT to_regprocedure($1) IS NOT NULL`, s.n.filterFn+"(jsonb, text[], text[])").Scan(&installed); err != nil {
		return spec, ti, fmt.Errorf("postgres source: look for the outbox's functions: %w", err)
	}
	if !installed {
		return spec, ti, fmt.Errorf("postgres source: the outbox's functions are not installed in this database (%s is missing); run \"eventsync outbox install\" against it first", s.n.filterFn)
	}
	// The data is filtered like the table's capture trigger, recorded at
	// install: lists left empty are the trigger's, a different one is an
	// error.
	if trig, ok, err := installedTrigger(ctx, q, ti); err != nil {
		return spec, ti, err
	} else if ok {
		given := spec
		if spec, err = spec.FromTrigger(trig); err != nil {
			return spec, ti, fmt.Errorf("postgres source: %w", err)
		}
		if len(given.ExcludeColumns)+len(given.Columns) == 0 && len(spec.ExcludeColumns)+len(spec.Columns) > 0 {
			s.log.Debug("snapshot data filtered like the outbox trigger", "table", ti.qualified, "columns", spec.Columns, "excluded", spec.ExcludeColumns)
		}
	}
	if err := ti.requireColumns(spec.Table, "included column", spec.Columns...); err != nil {
		return spec, ti, err
	}
	if err := ti.requireColumns(spec.Table, "excluded column", spec.ExcludeColumns...); err != nil {
		return spec, ti, err
	}
	return spec, ti, nil
}

// captureTrigger is the name of the trigger that writes a table's changes
// to the outbox; its arguments are the spec it was installed with.
const captureTrigger = "eventsync_capture"

// installedTrigger reads the spec the capture trigger of the table was
// installed with from the trigger's arguments (entity, key column,
// included and excluded columns, see triggerArgs): the one record of it.
func installedTrigger(ctx context.Context, q querier, ti tableInfo) (source.TriggerSpec, bool, error) {
	var args []byte
	err := q.QueryRow(ctx, `SELECT tgargs FROM pg_trigger WHERE tgrelid = $1 AND tgname = $2`, ti.oid, captureTrigger).Scan(&args)
	if errors.Is(err, pgx.ErrNoRows) {
		return source.TriggerSpec{}, false, nil
	}
	if err != nil {
		return source.TriggerSpec{}, false, fmt.Errorf("postgres source: read the outbox trigger of %s: %w", ti.qualified, err)
	}
	parts := strings.Split(string(args), "\x00") // each argument ends with a NUL
	if len(parts) < 4 {
		return source.TriggerSpec{}, false, fmt.Errorf("postgres source: the outbox trigger of %s has %d arguments, want 4; install it again (eventsync outbox install-trigger)", ti.qualified, len(parts)-1)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	return source.TriggerSpec{Table: ti.qualified, Entity: parts[0], KeyColumn: parts[1], Columns: split(parts[2]), ExcludeColumns: split(parts[3])}, true, nil
}

// Trigger implements source.TriggerReader.
func (s *Source) Trigger(ctx context.Context, table string) (source.TriggerSpec, bool, error) {
	ti, err := resolveTable(ctx, s.pool, table)
	if err != nil {
		return source.TriggerSpec{}, false, err
	}
	return installedTrigger(ctx, s.pool, ti)
}

// Snapshot reads the table in one REPEATABLE READ, READ ONLY transaction:
// every page sees the same committed state, and each row's version is the
// eventsync_version of exactly that state.
func (s *Source) Snapshot(ctx context.Context, spec source.SnapshotSpec, fn func(page []event.Event, lastKey string) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres source: begin snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	spec, ti, err := s.prepareSnapshot(ctx, tx, spec)
	if err != nil {
		return err
	}
	query := s.snapshotQuery(ti, spec, false)
	var after *string
	if spec.AfterKey != "" {
		k := spec.AfterKey
		after = &k
	}
	include, exclude := spec.Columns, spec.ExcludeColumns
	if include == nil {
		include = []string{}
	}
	if exclude == nil {
		exclude = []string{}
	}
	for {
		rows, err := tx.Query(ctx, query, spec.PageSize, include, exclude, after)
		if err != nil {
			return fmt.Errorf("postgres source: snapshot %s: %w", spec.Table, err)
		}
		page := make([]event.Event, 0, spec.PageSize)
		var lastKey string
		for rows.Next() {
			var key string
			var version int64
			var data []byte
			if err := rows.Scan(&key, &version, &data); err != nil {
				rows.Close()
				return fmt.Errorf("postgres source: read snapshot row: %w", err)
			}
			if version < 1 {
				rows.Close()
				return fmt.Errorf("postgres source: %s key %q has %s %d; versions must be >= 1", spec.Table, key, spec.VersionColumn, version)
			}
			page = append(page, event.Event{
				ID:      fmt.Sprintf("snapshot-%s-%s-%d", spec.Entity, key, version),
				Entity:  spec.Entity,
				Key:     key,
				Version: version,
				Op:      event.OpUpsert,
				Data:    data,
			})
			lastKey = key
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres source: snapshot %s: %w", spec.Table, err)
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
		after = &lastKey
	}
}

// Count returns the number of rows Snapshot would read.
func (s *Source) Count(ctx context.Context, spec source.SnapshotSpec) (int64, error) {
	spec, ti, err := s.prepareSnapshot(ctx, s.pool, spec)
	if err != nil {
		return 0, err
	}
	args := []any{}
	if spec.AfterKey != "" {
		args = append(args, spec.AfterKey)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, s.snapshotQuery(ti, spec, true), args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres source: count %s: %w", spec.Table, err)
	}
	return n, nil
}
