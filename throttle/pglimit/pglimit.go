// Package pglimit is the throttle.Limiter adapter on PostgreSQL: one row per
// sink name holds the GCRA theoretical arrival time, the hold and the probe
// lease, and each operation is one INSERT … ON CONFLICT DO UPDATE …
// RETURNING statement judged by the database clock (now()), so it is atomic
// and one round trip. The row lock serialises takes of one name; the table
// is UNLOGGED, so a take waits for no WAL flush (see migrate), and the
// throttle takes tokens in batches, tens of round trips a second per
// process rather than one per call.
package pglimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsync/eventsync/throttle"
)

// Config configures Open.
type Config struct {
	// DSN is a PostgreSQL URL or keyword/value string.
	DSN string
	// Schema holds the throttle table, created when missing; default "eventsync".
	Schema string
	// MaxConns caps the pool Open creates; default 8.
	MaxConns int32
}

var schemaPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.Schema == "" {
		c.Schema = "eventsync"
	}
	if c.MaxConns == 0 {
		c.MaxConns = 8
	}
	return c
}

// Validate reports the first problem with c, naming the fix.
func (c Config) Validate() error {
	if c.DSN == "" {
		return errors.New("postgres limiter: DSN is empty; want postgres://user:password@host:5432/db")
	}
	if !schemaPattern.MatchString(c.Schema) {
		return fmt.Errorf("postgres limiter: schema %q is not a plain identifier; use lower-case letters, digits and _ (at most 63)", c.Schema)
	}
	if c.MaxConns < 1 {
		return fmt.Errorf("postgres limiter: MaxConns %d must be at least 1", c.MaxConns)
	}
	return nil
}

// Limiter is a throttle.Limiter on PostgreSQL. It is safe for concurrent use.
type Limiter struct {
	pool    *pgxpool.Pool
	ownPool bool
	take    string
	hold    string
	held    string
	probe   string
}

var _ throttle.Limiter = (*Limiter)(nil)

// New uses an existing pool (for example the PostgreSQL state store's) and
// creates the table in schema when missing. Close does not close the pool.
func New(ctx context.Context, pool *pgxpool.Pool, schema string) (*Limiter, error) {
	cfg := Config{DSN: "given", Schema: schema}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := newLimiter(pool, cfg.Schema)
	if err := l.migrate(ctx, cfg.Schema); err != nil {
		return nil, err
	}
	return l, nil
}

// Open connects to cfg.DSN and creates the table when missing.
func Open(ctx context.Context, cfg Config) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres limiter: parse DSN: %w; expected postgres://user:password@host:5432/db", err)
	}
	pcfg.MaxConns = cfg.MaxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres limiter: create pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w; is it running and are the credentials right?", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	l := newLimiter(pool, cfg.Schema)
	l.ownPool = true
	if err := l.migrate(ctx, cfg.Schema); err != nil {
		pool.Close()
		return nil, err
	}
	return l, nil
}

// Close closes the pool if Open created it.
func (l *Limiter) Close() error {
	if l.ownPool {
		l.pool.Close()
	}
	return nil
}

func newLimiter(pool *pgxpool.Pool, schema string) *Limiter {
	table := pgx.Identifier{schema, "throttle"}.Sanitize()
	// $2 is the emission interval in whole microseconds, $3 the burst, $4
	// the calls asked for, all clamped by throttle first: $2 × $3 stays
	// below 10^15 µs, well within bigint, numeric and interval. granted is
	// throttle.GCRA's count: none while the name is held, else as many of
	// $4 as fit between the arrival time and burst intervals past now.
	const granted = `CASE WHEN l.held_until > now() THEN 0 ELSE greatest(0, least($4::bigint,
		floor(($3::bigint * $2::bigint - extract(epoch FROM greatest(l.tat, now()) - now()) * 1e6) / $2::bigint)::bigint)) END`
	return &Limiter{
		pool: pool,
		take: `INSERT INTO ` + table + ` AS l (name, tat, last_granted)
			VALUES ($1, now() + least($4::bigint, $3::bigint) * $2::bigint * interval '1 microsecond', least($4::bigint, $3::bigint))
			ON CONFLICT (name) DO UPDATE SET
				last_granted = ` + granted + `,
				tat = CASE WHEN ` + granted + ` > 0 THEN greatest(l.tat, now()) + (` + granted + `) * $2::bigint * interval '1 microsecond' ELSE l.tat END
			RETURNING last_granted, CASE
				WHEN last_granted > 0 THEN 0
				WHEN held_until > now() THEN extract(epoch FROM held_until - now()) * 1e6
				ELSE extract(epoch FROM greatest(tat, now()) + (1 - $3::bigint) * $2::bigint * interval '1 microsecond' - now()) * 1e6
			END::bigint`,
		// The rate rule is throttle.MergeHoldRate's; $3 is already
		// throttle.HoldRate's (0: none). A hold that ended sets nothing:
		// a new row gets no hold, an existing one changes only while its
		// own hold lasts.
		hold: `INSERT INTO ` + table + ` AS l (name, held_until, hold_rate)
			VALUES ($1, CASE WHEN $2 > now() THEN $2::timestamptz END, CASE WHEN $2 > now() AND $3::float8 > 0 THEN $3::float8 END)
			ON CONFLICT (name) DO UPDATE SET
				hold_rate = CASE
					WHEN $3::float8 <= 0 THEN CASE WHEN l.held_until > now() THEN l.hold_rate END
					WHEN l.held_until > now() AND l.hold_rate > 0 THEN least(l.hold_rate, $3::float8)
					ELSE $3::float8 END,
				held_until = greatest(l.held_until, excluded.held_until)
			WHERE l.held_until > now() OR $2 > now()`,
		held: `SELECT held_until, coalesce(hold_rate, 0) FROM ` + table + ` WHERE name = $1`,
		probe: `INSERT INTO ` + table + ` AS l (name, probe_owner, probe_until)
			VALUES ($1, $2, now() + $3::float8 * interval '1 second')
			ON CONFLICT (name) DO UPDATE SET probe_owner = excluded.probe_owner, probe_until = excluded.probe_until
			WHERE l.probe_owner IS NULL OR l.probe_owner = excluded.probe_owner OR l.probe_until <= now()
			RETURNING true`,
	}
}

// migrate creates the schema and table once; the advisory lock keeps
// concurrent first starts from racing on the catalog. The table is
// UNLOGGED: a take is then one row update that writes no WAL and waits for
// no flush, instead of a durable commit that every worker's take of the
// same row queues behind. A crash empties the table, which costs what a
// restart of every worker costs (one burst, a hold forgotten until the
// next 429, the learned rate learned again); a table created logged by an
// older version is switched once.
func (l *Limiter) migrate(ctx context.Context, schema string) error {
	table := pgx.Identifier{schema, "throttle"}.Sanitize()
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "eventsync throttle "+schema); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE UNLOGGED TABLE IF NOT EXISTS `+table+` (
			name         text PRIMARY KEY,
			tat          timestamptz,
			last_ok      boolean NOT NULL DEFAULT false,
			last_granted bigint NOT NULL DEFAULT 0,
			held_until   timestamptz,
			hold_rate    float8,
			probe_owner  text,
			probe_until  timestamptz
		)`); err != nil {
			return err
		}
		// Tables of older versions: last_ok (kept for them while they
		// still run) was their one-call answer.
		if _, err := tx.Exec(ctx, `ALTER TABLE `+table+` ADD COLUMN IF NOT EXISTS last_granted bigint NOT NULL DEFAULT 0`); err != nil {
			return err
		}
		var persistence string
		if err := tx.QueryRow(ctx, `SELECT c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = 'throttle'`, schema).Scan(&persistence); err != nil {
			return err
		}
		if persistence == "p" {
			_, err := tx.Exec(ctx, `ALTER TABLE `+table+` SET UNLOGGED`)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres limiter: create table %s.throttle: %w; does the user have CREATE on the database?", schema, err)
	}
	return nil
}

// Take implements throttle.Limiter.
func (l *Limiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	interval := throttle.EmissionInterval(rate).Microseconds()
	var granted, waitMicros int64
	if err := l.pool.QueryRow(ctx, l.take, name, interval, throttle.ClampBurst(burst), throttle.ClampBurst(n)).Scan(&granted, &waitMicros); err != nil {
		return 0, 0, fmt.Errorf("postgres limiter: take %q: %w", name, err)
	}
	if granted > 0 {
		return int(granted), 0, nil
	}
	return 0, micros(waitMicros), nil
}

// micros converts a wait in microseconds, at least 1µs (a refusal always
// waits) and saturating rather than overflowing.
func micros(us int64) time.Duration {
	return time.Duration(max(1, min(us, math.MaxInt64/int64(time.Microsecond)))) * time.Microsecond
}

// Hold implements throttle.Limiter.
func (l *Limiter) Hold(ctx context.Context, name string, until time.Time, rate float64) error {
	until = throttle.ClampHoldEnd(time.Now(), until)
	if _, err := l.pool.Exec(ctx, l.hold, name, until, throttle.HoldRate(rate)); err != nil {
		return fmt.Errorf("postgres limiter: hold %q: %w", name, err)
	}
	return nil
}

// HeldUntil implements throttle.Limiter.
func (l *Limiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	var until *time.Time
	var rate float64
	err := l.pool.QueryRow(ctx, l.held, name).Scan(&until, &rate)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && until == nil) {
		return time.Time{}, 0, nil
	}
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("postgres limiter: read hold of %q: %w", name, err)
	}
	return *until, throttle.HoldRate(rate), nil
}

// TryProbe implements throttle.Limiter.
func (l *Limiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	var ok bool
	err := l.pool.QueryRow(ctx, l.probe, name, owner, throttle.ClampSpan(ttl).Seconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("postgres limiter: probe lease of %q: %w", name, err)
	}
	return ok, nil
}
