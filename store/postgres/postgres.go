// Package postgres is the durable state-store adapter on PostgreSQL, the
// production default. All state lives in one schema (default "eventsync")
// that Open creates and migrates itself, safely when many processes start at
// once. Every lease operation is one SQL statement on the happy path, lease
// expiry is judged by the database clock so worker clocks never matter, and
// fencing is a token comparison in the UPDATE's WHERE clause. The lease
// statements of concurrent calls travel together, one round trip and one
// commit per batch (see batcher).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/store"
)

// batchParam in the DSN (…?eventsync_batch=false) turns batching off.
const batchParam = "eventsync_batch"

// DefaultMaxConns sizes the pool for hundreds of in-flight events: the lease
// statements of concurrent events travel in batches, at most four at a time
// (batchFlushers), each holding a connection for one round trip. A worker at
// concurrency 256 is as fast with 4 connections as with 32
// (BenchmarkWorkerPostgresPool, docs/benchmarks.md), and 16 workers and a
// relay then hold at most 73 of PostgreSQL's default max_connections of 100. A
// larger pool is the DSN's pool_max_conns (docs/deploy.md, "Sizing").
const DefaultMaxConns = 4

// Config configures the PostgreSQL store.
type Config struct {
	// DSN is a PostgreSQL URL or keyword/value string, e.g.
	// postgres://eventsync:secret@db:5432/app?sslmode=require.
	DSN string
	// Schema holds eventsync's tables; created when missing. Default "eventsync".
	Schema string
	// MaxConns caps the connection pool. Default: the DSN's pool_max_conns
	// parameter if given, else DefaultMaxConns.
	MaxConns int32
	// NoBatch sends every lease statement on its own instead of batching
	// the statements of concurrent calls into one round trip and commit;
	// eventsync_batch=false in the DSN does the same.
	NoBatch bool
	// Logger receives migration and connection messages; nil means slog.Default().
	Logger *slog.Logger
}

var schemaPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.Schema == "" {
		c.Schema = "eventsync"
	}
	if c.MaxConns == 0 && !strings.Contains(c.DSN, "pool_max_conns") {
		c.MaxConns = DefaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c, naming the fix.
func (c Config) Validate() error {
	if c.DSN == "" {
		return setting.Errorf("store", "postgres store: DSN is empty; want postgres://user:password@host:5432/db")
	}
	if !schemaPattern.MatchString(c.Schema) {
		return fmt.Errorf("postgres store: schema %q is not a plain identifier; use lower-case letters, digits and _ (at most 63)", c.Schema)
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("postgres store: MaxConns %d must not be negative (0 means the DSN's pool_max_conns or %d)", c.MaxConns, DefaultMaxConns)
	}
	return nil
}

// Store is a store.Store on PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	batch  *batcher // nil sends every lease statement on its own
	log    *slog.Logger
	schema string
	q      queries
}

var _ store.Store = (*Store)(nil)

// Open connects to PostgreSQL, creates or migrates the schema and returns the
// store. Close it when done.
func Open(ctx context.Context, cfg Config) (_ *Store, err error) {
	secrets := redact.NewScrubber(cfg.DSN) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, setting.Errorf("store", "postgres store: parse DSN: %w; want postgres://user:password@host:5432/db", err)
	}
	// pgx hands unknown DSN parameters to the server as settings; this one
	// is ours.
	if v, ok := pcfg.ConnConfig.RuntimeParams[batchParam]; ok {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return nil, setting.Errorf("store", "postgres store: %s=%q in the DSN: want true or false", batchParam, v)
		}
		delete(pcfg.ConnConfig.RuntimeParams, batchParam)
		cfg.NoBatch = cfg.NoBatch || !on
	}
	if cfg.MaxConns > 0 { // else the DSN's pool_max_conns stands
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: create pool: %w", err)
	}
	where := fmt.Sprintf("%s:%d/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database)
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		// TLS settings live in the DSN (sslmode, sslrootcert, sslcert,
		// sslkey), read by pgx as libpq reads them.
		if cerr := tlsconf.ExplainNamed(err, tlsconf.PostgresNames("store"), tlsconf.DSNParam(cfg.DSN, "sslrootcert"), tlsconf.DSNParam(cfg.DSN, "sslcert")); tlsconf.IsCertificateProblem(cerr) {
			return nil, fmt.Errorf("connect to PostgreSQL at %s: TLS handshake failed: %w", where, cerr)
		}
		return nil, setting.Errorf("store", "connect to PostgreSQL at %s: %w; is it running and are the credentials right?", where, err)
	}
	s := &Store{pool: pool, log: cfg.Logger, schema: cfg.Schema, q: newQueries(cfg.Schema)}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres store at %s: %w", where, err)
	}
	if !cfg.NoBatch {
		s.batch = newBatcher(pool)
	}
	return s, nil
}

// Close stops the batcher and closes the connection pool. It is safe to
// call more than once.
func (s *Store) Close() error {
	if s.batch != nil {
		s.batch.close()
	}
	s.pool.Close()
	return nil
}

// lease runs one lease statement, batched with concurrent ones unless
// batching is off.
func (s *Store) lease(ctx context.Context, c *call) error {
	if s.batch != nil {
		return s.batch.do(ctx, c)
	}
	return sendBatch(ctx, s.pool, []*call{c})
}

// Pool exposes the connection pool for health checks and metrics.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// migrations are applied in order, each once; never edit a released one,
// append a new one instead. %[1]s is the quoted schema name.
var migrations = []string{
	// 1: per-key state with its lease, and the control space.
	`CREATE TABLE %[1]s.state (
		entity          text    NOT NULL,
		key             text    NOT NULL,
		applied_version bigint  NOT NULL DEFAULT 0,
		remote_id       text    NOT NULL DEFAULT '',
		deleted         boolean NOT NULL DEFAULT false,
		last_event      bytea,
		intent_version  bigint,
		intent_action   text,
		intent_token    bigint,
		intent_at       timestamptz,
		repair_needed   boolean NOT NULL DEFAULT false,
		lease_owner     text,
		lease_token     bigint  NOT NULL DEFAULT 0,
		lease_expires   timestamptz,
		PRIMARY KEY (entity, key)
	);
	CREATE TABLE %[1]s.control (
		name       text PRIMARY KEY,
		value      bytea NOT NULL,
		expires_at timestamptz
	);
	CREATE INDEX control_expires_at ON %[1]s.control (expires_at) WHERE expires_at IS NOT NULL;`,
	// 2: the lease token current when the repair flag was set, so a commit
	// under that very lease keeps the flag (see store.Store.Commit).
	`ALTER TABLE %[1]s.state ADD COLUMN repair_token bigint NOT NULL DEFAULT 0;`,
	// 3: the write in doubt counts its API failures (store.Intent.Failures),
	// and Acquire returns the intent that stood before it recorded its own:
	// its UPDATE copies the old intent into prior_intent_* (SET expressions
	// see the old row, RETURNING the new one), and only that RETURNING reads
	// them. intent_action is no longer read or written; it stays, because a
	// migration only adds.
	`ALTER TABLE %[1]s.state
		ADD COLUMN intent_failures       integer NOT NULL DEFAULT 0,
		ADD COLUMN prior_intent_version  bigint,
		ADD COLUMN prior_intent_token    bigint,
		ADD COLUMN prior_intent_at       timestamptz,
		ADD COLUMN prior_intent_failures integer;`,
}

// migrate brings the schema to the newest version. A transaction-scoped
// advisory lock, keyed by the schema name, serializes processes that start at
// the same time; the losers find the work done.
func (s *Store) migrate(ctx context.Context) error {
	return s.migrateTo(ctx, len(migrations))
}

// migrateTo applies the migrations up to version target (tests build older
// schemas with it).
func (s *Store) migrateTo(ctx context.Context, target int) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('eventsync migrate ' || $1, 0))`, s.schema); err != nil {
		return fmt.Errorf("lock for migration: %w", err)
	}
	schema := pgx.Identifier{s.schema}.Sanitize()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE SCHEMA IF NOT EXISTS %s;
		CREATE TABLE IF NOT EXISTS %s.migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`, schema, schema)); err != nil {
		return fmt.Errorf("create schema %s: %w; does the user have CREATE permission on the database?", s.schema, err)
	}
	var current int
	if err := tx.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(version), 0) FROM %s.migrations`, schema)).Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("schema %s is at version %d but this eventsync knows only %d; upgrade eventsync", s.schema, current, len(migrations))
	}
	for v := current + 1; v <= target; v++ {
		// Simple protocol: a migration holds several statements.
		if _, err := tx.Exec(ctx, fmt.Sprintf(migrations[v-1], schema), pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("apply migration %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO %s.migrations (version) VALUES ($1)`, schema), v); err != nil {
			return fmt.Errorf("record migration %d: %w", v, err)
		}
		s.log.Info("migrated state store schema", "schema", s.schema, "version", v)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

// queries are built once per schema so pgx's per-connection statement cache
// prepares each exactly once.
type queries struct {
	acquire, remaining, extend, commit, classify, release, releaseFailed, markRepair, scan string
	setControl, getControl, listControl, deleteControl                                     string
}

// stateColumns are read into a stateRow. The intent_action column of
// migration 1 is no longer read or written (see migration 3).
const stateColumns = `applied_version, remote_id, deleted, last_event,
	intent_version, intent_token, intent_at, intent_failures, repair_needed`

// priorStateColumns are stateColumns with the intent as it stood before the
// Acquire whose RETURNING reads them.
const priorStateColumns = `applied_version, remote_id, deleted, last_event,
	prior_intent_version, prior_intent_token, prior_intent_at, prior_intent_failures, repair_needed`

// recordIntent is the condition, on the old row s and the version $5, under
// which Acquire records $5 as the intent.
const recordIntent = `$5::bigint > s.applied_version AND $5::bigint > coalesce(s.intent_version, 0)`

// nothingToWrite is store.NothingToWrite of version $5 on row %[1]s.
const nothingToWrite = `($5::bigint > 0 AND NOT %[1]s.repair_needed AND (
	    coalesce(%[1]s.intent_version, 0) > $5::bigint AND coalesce(%[1]s.intent_version, 0) > %[1]s.applied_version
	    OR $5::bigint <= %[1]s.applied_version))`

func newQueries(schema string) queries {
	st := pgx.Identifier{schema, "state"}.Sanitize()
	ctl := pgx.Identifier{schema, "control"}.Sanitize()
	return queries{
		// The conflict branch takes the lease only when it is free, expired
		// or already ours, and $5 has something to write; otherwise nothing
		// changes. It records version $5 as the intent when it is above
		// the applied version and the standing intent, and keeps the old
		// intent in prior_intent_* for RETURNING; a new row had none. The
		// first column says whether the lease was taken: when $5 has
		// nothing to write, the row as the statement found it is returned
		// instead (cur: no lease, no write), and no row when it is locked.
		acquire: `WITH cur AS (
			    SELECT ` + stateColumns + ` FROM ` + st + ` WHERE entity = $1 AND key = $2
			), up AS (
			INSERT INTO ` + st + ` AS s (entity, key, lease_owner, lease_token, lease_expires,
			    intent_version, intent_token, intent_at)
			VALUES ($1, $2, $3, 1, clock_timestamp() + $4::bigint * interval '1 microsecond',
			    CASE WHEN $5::bigint > 0 THEN $5::bigint END, CASE WHEN $5::bigint > 0 THEN 1 END,
			    CASE WHEN $5::bigint > 0 THEN clock_timestamp() END)
			ON CONFLICT (entity, key) DO UPDATE
			SET lease_owner = EXCLUDED.lease_owner,
			    lease_token = s.lease_token + 1,
			    lease_expires = EXCLUDED.lease_expires,
			    prior_intent_version = s.intent_version,
			    prior_intent_token = s.intent_token,
			    prior_intent_at = s.intent_at,
			    prior_intent_failures = s.intent_failures,
			    intent_version = CASE WHEN ` + recordIntent + ` THEN $5::bigint ELSE s.intent_version END,
			    intent_token = CASE WHEN ` + recordIntent + ` THEN s.lease_token + 1 ELSE s.intent_token END,
			    intent_at = CASE WHEN ` + recordIntent + ` THEN clock_timestamp() ELSE s.intent_at END,
			    intent_failures = CASE WHEN ` + recordIntent + ` THEN 0 ELSE s.intent_failures END
			WHERE (s.lease_owner IS NULL OR s.lease_expires <= clock_timestamp() OR s.lease_owner = EXCLUDED.lease_owner)
			    AND NOT ` + fmt.Sprintf(nothingToWrite, "s") + `
			RETURNING lease_token, lease_expires, ` + priorStateColumns + `
			)
			SELECT true, up.* FROM up
			UNION ALL
			SELECT false, 0::bigint, 'epoch'::timestamptz, cur.* FROM cur
			WHERE NOT EXISTS (SELECT 1 FROM up) AND ` + fmt.Sprintf(nothingToWrite, "cur"),
		remaining: `SELECT (extract(epoch FROM lease_expires - clock_timestamp()) * 1000000)::bigint
			FROM ` + st + ` WHERE entity = $1 AND key = $2 AND lease_owner IS NOT NULL`,
		extend: `UPDATE ` + st + ` SET lease_expires = clock_timestamp() + $4::bigint * interval '1 microsecond'
			WHERE entity = $1 AND key = $2 AND lease_token = $3 AND lease_owner IS NOT NULL
			RETURNING lease_expires`,
		// An intent above the committed version (a repair re-applying an
		// older state) stays in doubt.
		commit: `UPDATE ` + st + ` SET applied_version = $4, remote_id = $5, deleted = $6, last_event = $7,
			    intent_version = CASE WHEN intent_version <= $4 THEN NULL ELSE intent_version END,
			    intent_token = CASE WHEN intent_version <= $4 THEN NULL ELSE intent_token END,
			    intent_at = CASE WHEN intent_version <= $4 THEN NULL ELSE intent_at END,
			    intent_failures = CASE WHEN intent_version <= $4 THEN 0 ELSE intent_failures END,
			    repair_needed = repair_needed AND repair_token >= $3, lease_owner = NULL, lease_expires = NULL
			WHERE entity = $1 AND key = $2 AND lease_token = $3 AND applied_version <= $4`,
		classify: `SELECT lease_token, applied_version FROM ` + st + ` WHERE entity = $1 AND key = $2`,
		// Both match the row while the token is current, held or released
		// already, so no row changed means the lease was lost.
		release: `UPDATE ` + st + ` SET lease_owner = NULL, lease_expires = NULL
			WHERE entity = $1 AND key = $2 AND lease_token = $3`,
		// Only a lease still held counts (SET sees the old row): a retried
		// call of one released already must not count the failure twice.
		releaseFailed: `UPDATE ` + st + ` SET lease_owner = NULL, lease_expires = NULL,
			    intent_failures = CASE WHEN lease_owner IS NULL THEN intent_failures
			        WHEN intent_version IS NULL THEN 0 ELSE intent_failures + 1 END
			WHERE entity = $1 AND key = $2 AND lease_token = $3`,
		markRepair: `INSERT INTO ` + st + ` AS s (entity, key, repair_needed) VALUES ($1, $2, true)
			ON CONFLICT (entity, key) DO UPDATE SET repair_needed = true, repair_token = s.lease_token`,
		// Keyset pagination: no connection is held while the callback runs.
		scan: `SELECT key, ` + stateColumns + ` FROM ` + st + `
			WHERE entity = $1 AND key > $2 ORDER BY key LIMIT $3`,
		// Expired records are swept by the writers, so heartbeats of workers
		// that went away do not pile up; SKIP LOCKED keeps concurrent
		// sweepers from waiting on (or deadlocking with) each other.
		setControl: `WITH swept AS (
				DELETE FROM ` + ctl + ` WHERE name IN (
					SELECT name FROM ` + ctl + ` WHERE expires_at <= clock_timestamp() AND name <> $1
					LIMIT 100 FOR UPDATE SKIP LOCKED)
			)
			INSERT INTO ` + ctl + ` (name, value, expires_at)
			VALUES ($1, $2, CASE WHEN $3::bigint > 0 THEN clock_timestamp() + $3::bigint * interval '1 microsecond' END)
			ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`,
		getControl: `SELECT value FROM ` + ctl + `
			WHERE name = $1 AND (expires_at IS NULL OR expires_at > clock_timestamp())`,
		listControl: `SELECT name, value FROM ` + ctl + `
			WHERE starts_with(name, $1) AND (expires_at IS NULL OR expires_at > clock_timestamp())`,
		deleteControl: `DELETE FROM ` + ctl + ` WHERE name = $1`,
	}
}

// stateRow receives the state columns; nullable intent fields decide whether
// there is an intent.
type stateRow struct {
	applied   int64
	remoteID  string
	deleted   bool
	lastEvent []byte
	// pgtype's nullable values scan without the per-row plan a pointer
	// to a pointer needs (a few allocations per lease call).
	intentVersion  pgtype.Int8
	intentToken    pgtype.Int8
	intentAt       pgtype.Timestamptz
	intentFailures pgtype.Int4
	repair         bool
}

// dest appends the row's scan destinations to to.
func (r *stateRow) dest(to []any) []any {
	return append(to, &r.applied, &r.remoteID, &r.deleted, &r.lastEvent,
		&r.intentVersion, &r.intentToken, &r.intentAt, &r.intentFailures, &r.repair)
}

func (r *stateRow) state() store.State {
	st := store.State{
		AppliedVersion: r.applied,
		RemoteID:       r.remoteID,
		Deleted:        r.deleted,
		RepairNeeded:   r.repair,
		LastEvent:      r.lastEvent,
	}
	if r.intentVersion.Valid {
		in := store.Intent{Version: r.intentVersion.Int64}
		if r.intentFailures.Valid {
			in.Failures = int(r.intentFailures.Int32)
		}
		if r.intentToken.Valid {
			in.Token = r.intentToken.Int64
		}
		if r.intentAt.Valid {
			in.At = r.intentAt.Time
		}
		st.Intent = &in
	}
	return st
}

// Acquire implements store.Store.
func (s *Store) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	if ttl <= 0 {
		return store.Lease{}, store.State{}, fmt.Errorf("postgres store: acquire %s: ttl %s must be positive", k, ttl)
	}
	// One allocation for everything the reply is scanned into.
	var r struct {
		l                store.Lease
		row              stateRow
		leased, answered bool
		dest             [12]any
	}
	r.l = store.Lease{Key: k, Owner: owner}
	err := s.lease(ctx, &call{key: k, sql: s.q.acquire, args: []any{k.Entity, k.Key, owner, ttl.Microseconds(), version},
		read: func(br pgx.BatchResults) error {
			err := br.QueryRow().Scan(r.row.dest(append(r.dest[:0], &r.leased, &r.l.Token, &r.l.Expires))...)
			r.answered = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}})
	l, row, leased, answered := r.l, &r.row, r.leased, r.answered
	if err != nil {
		return store.Lease{}, store.State{}, fmt.Errorf("postgres store: acquire %s: %w", k, err)
	}
	if answered {
		if !leased { // nothing to write: no lease taken
			return store.Lease{Key: k, Owner: owner}, row.state(), nil
		}
		return l, row.state(), nil
	}
	// Held by another owner: report how long it has left.
	var remainingMicros int64
	err = s.pool.QueryRow(ctx, s.q.remaining, k.Entity, k.Key).Scan(&remainingMicros)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return store.Lease{}, store.State{}, fmt.Errorf("postgres store: acquire %s: read lease: %w", k, err)
	}
	// Released or expired in between: the caller retries at once.
	retry := max(time.Duration(remainingMicros)*time.Microsecond, time.Millisecond)
	return store.Lease{}, store.State{}, &store.LockedError{Key: k, RetryAfter: retry}
}

// Extend implements store.Store.
func (s *Store) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if ttl <= 0 {
		return store.Lease{}, fmt.Errorf("postgres store: extend %s: ttl %s must be positive", l.Key, ttl)
	}
	var extended bool
	err := s.lease(ctx, &call{key: l.Key, sql: s.q.extend, args: []any{l.Key.Entity, l.Key.Key, l.Token, ttl.Microseconds()},
		read: func(br pgx.BatchResults) error {
			err := br.QueryRow().Scan(&l.Expires)
			extended = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			return err
		}})
	if err != nil {
		return store.Lease{}, fmt.Errorf("postgres store: extend %s: %w", l.Key, err)
	}
	if !extended {
		return store.Lease{}, fmt.Errorf("postgres store: extend %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	return l, nil
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	affected, err := s.execLease(ctx, l.Key, s.q.commit, l.Key.Entity, l.Key.Key, l.Token,
		c.Version, c.RemoteID, c.Deleted, c.Event)
	if err != nil {
		return fmt.Errorf("postgres store: commit %s version %d: %w", l.Key, c.Version, err)
	}
	if affected == 1 {
		return nil
	}
	// Rare path: find out whether the token or the version was the problem.
	var token, applied int64
	err = s.pool.QueryRow(ctx, s.q.classify, l.Key.Entity, l.Key.Key).Scan(&token, &applied)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("postgres store: commit %s token %d: key unknown: %w", l.Key, l.Token, store.ErrFenced)
	case err != nil:
		return fmt.Errorf("postgres store: commit %s: classify failure: %w", l.Key, err)
	case token != l.Token:
		return fmt.Errorf("postgres store: commit %s token %d, current %d: %w", l.Key, l.Token, token, store.ErrFenced)
	case applied > c.Version:
		return fmt.Errorf("postgres store: commit %s version %d, applied %d: %w", l.Key, c.Version, applied, store.ErrStaleCommit)
	default:
		return fmt.Errorf("postgres store: commit %s token %d: lease changed during commit: %w", l.Key, l.Token, store.ErrFenced)
	}
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, l store.Lease) error {
	affected, err := s.execLease(ctx, l.Key, s.q.release, l.Key.Entity, l.Key.Key, l.Token)
	if err != nil {
		return fmt.Errorf("postgres store: release %s: %w", l.Key, err)
	}
	if affected == 0 {
		return fmt.Errorf("postgres store: release %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	return nil
}

// ReleaseFailed implements store.Store.
func (s *Store) ReleaseFailed(ctx context.Context, l store.Lease) error {
	affected, err := s.execLease(ctx, l.Key, s.q.releaseFailed, l.Key.Entity, l.Key.Key, l.Token)
	if err != nil {
		return fmt.Errorf("postgres store: release %s after a failure: %w", l.Key, err)
	}
	if affected == 0 {
		return fmt.Errorf("postgres store: release %s token %d after a failure: %w", l.Key, l.Token, store.ErrFenced)
	}
	return nil
}

// execLease runs a lease statement that returns no rows and reports how
// many rows it changed.
func (s *Store) execLease(ctx context.Context, k store.Key, sql string, args ...any) (int64, error) {
	var affected int64
	err := s.lease(ctx, &call{key: k, sql: sql, args: args, read: func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		affected = tag.RowsAffected()
		return err
	}})
	return affected, err
}

// MarkRepair implements store.Store.
func (s *Store) MarkRepair(ctx context.Context, k store.Key) error {
	if _, err := s.pool.Exec(ctx, s.q.markRepair, k.Entity, k.Key); err != nil {
		return fmt.Errorf("postgres store: mark %s for repair: %w", k, err)
	}
	return nil
}

// scanPage is how many rows Scan reads per query.
const scanPage = 1000

// Scan implements store.Store. It pages through the entity's keys in key
// order; keys added during the scan may or may not be visited.
func (s *Store) Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error {
	after := ""
	for {
		type item struct {
			key string
			st  store.State
		}
		page := make([]item, 0, scanPage)
		rows, err := s.pool.Query(ctx, s.q.scan, entity, after, scanPage)
		if err != nil {
			return fmt.Errorf("postgres store: scan %s: %w", entity, err)
		}
		for rows.Next() {
			var (
				key string
				row stateRow
			)
			if err := rows.Scan(row.dest([]any{&key})...); err != nil {
				rows.Close()
				return fmt.Errorf("postgres store: scan %s: %w", entity, err)
			}
			page = append(page, item{key, row.state()})
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres store: scan %s: %w", entity, err)
		}
		for _, it := range page {
			if err := fn(store.Key{Entity: entity, Key: it.key}, it.st); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].key
	}
}

// SetControl implements store.Control.
func (s *Store) SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("postgres store: set control %q: negative ttl %s", name, ttl)
	}
	if value == nil {
		value = []byte{}
	}
	if _, err := s.pool.Exec(ctx, s.q.setControl, name, value, ttl.Microseconds()); err != nil {
		return fmt.Errorf("postgres store: set control %q: %w", name, err)
	}
	return nil
}

// GetControl implements store.Control.
func (s *Store) GetControl(ctx context.Context, name string) ([]byte, bool, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, s.q.getControl, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("postgres store: get control %q: %w", name, err)
	}
	return v, true, nil
}

// ListControl implements store.Control.
func (s *Store) ListControl(ctx context.Context, prefix string) (map[string][]byte, error) {
	rows, err := s.pool.Query(ctx, s.q.listControl, prefix)
	if err != nil {
		return nil, fmt.Errorf("postgres store: list control %q: %w", prefix, err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var (
			name string
			v    []byte
		)
		if err := rows.Scan(&name, &v); err != nil {
			return nil, fmt.Errorf("postgres store: list control %q: %w", prefix, err)
		}
		out[name] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: list control %q: %w", prefix, err)
	}
	return out, nil
}

// DeleteControl implements store.Control.
func (s *Store) DeleteControl(ctx context.Context, name string) error {
	if _, err := s.pool.Exec(ctx, s.q.deleteControl, name); err != nil {
		return fmt.Errorf("postgres store: delete control %q: %w", name, err)
	}
	return nil
}
