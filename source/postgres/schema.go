package postgres

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// names holds the schema-qualified, quoted names every statement uses, so
// triggers keep working whatever search_path the application's sessions
// have.
type names struct {
	schema     string // raw schema name
	qSchema    string // quoted schema
	outbox     string // "schema".eventsync_outbox
	migrations string
	seq        string // "schema".eventsync_version_seq
	seqLiteral string // the sequence name as a SQL string literal for nextval()
	filterFn   string
	stampFn    string
	captureFn  string
	notifyFn   string
	channel    string // LISTEN/NOTIFY channel
}

func newNames(schema string) names {
	q := pgx.Identifier{schema}.Sanitize()
	seq := q + ".eventsync_version_seq"
	// One channel per schema so that outboxes in different schemas of one
	// database do not wake each other's relays. Channel names are
	// identifiers limited to 63 bytes.
	channel := "eventsync_outbox_" + schema
	if len(channel) > 63 {
		sum := sha256.Sum256([]byte(schema))
		channel = "eventsync_outbox_" + hex.EncodeToString(sum[:])[:32]
	}
	return names{
		schema:     schema,
		qSchema:    q,
		outbox:     q + ".eventsync_outbox",
		migrations: q + ".eventsync_outbox_migrations",
		seq:        seq,
		seqLiteral: quoteLiteral(seq),
		filterFn:   q + ".eventsync_filter",
		stampFn:    q + ".eventsync_stamp",
		captureFn:  q + ".eventsync_capture",
		notifyFn:   q + ".eventsync_outbox_notify",
		channel:    channel,
	}
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// migrations are applied in order, each once, recorded in
// eventsync_outbox_migrations. Never edit a released migration; append.
func (n names) migrationSteps() []string {
	r := strings.NewReplacer(
		"{outbox}", n.outbox,
		"{seq}", n.seq,
		"{seqlit}", n.seqLiteral,
		"{filter}", n.filterFn,
		"{stamp}", n.stampFn,
		"{capture}", n.captureFn,
		"{notify}", n.notifyFn,
		"{channel}", quoteLiteral(n.channel),
	)
	return []string{r.Replace(migration1)}
}

const migration1 = `
CREATE SEQUENCE IF NOT EXISTS {seq};

CREATE TABLE IF NOT EXISTS {outbox} (
	id          bigserial PRIMARY KEY,
	entity      text        NOT NULL,
	key         text        NOT NULL,
	version     bigint      NOT NULL,
	op          text        NOT NULL CHECK (op IN ('upsert', 'delete')),
	data        jsonb,
	occurred_at timestamptz NOT NULL DEFAULT now(),
	created_at  timestamptz NOT NULL DEFAULT now(),
	sent_at     timestamptz
);

-- The relay only ever looks for unsent rows; keep that index tiny.
CREATE INDEX IF NOT EXISTS eventsync_outbox_unsent ON {outbox} (id) WHERE sent_at IS NULL;
-- Retention cleanup finds old sent rows by sent_at.
CREATE INDEX IF NOT EXISTS eventsync_outbox_sent ON {outbox} (sent_at) WHERE sent_at IS NOT NULL;

-- eventsync_filter is the one definition of which columns reach the event
-- data, used by the capture trigger and by snapshots alike.
CREATE OR REPLACE FUNCTION {filter}(doc jsonb, include_cols text[], exclude_cols text[])
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT (CASE
		WHEN include_cols IS NULL OR cardinality(include_cols) = 0 THEN doc
		ELSE coalesce((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(doc) e
		               WHERE e.key = ANY (include_cols)), '{}'::jsonb)
	END) - coalesce(exclude_cols, '{}'::text[]) - 'eventsync_version'
$$;

-- BEFORE INSERT OR UPDATE: stamp the row with the next version while the
-- row is locked, so versions of one row increase in commit order and a
-- snapshot reads the version of exactly the state it sees.
CREATE OR REPLACE FUNCTION {stamp}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.eventsync_version := nextval({seqlit});
	RETURN NEW;
END
$$;

-- AFTER INSERT OR UPDATE OR DELETE: write the outbox row in the same
-- transaction. Arguments: entity, key column, included columns (comma
-- separated, empty = all), excluded columns (comma separated).
CREATE OR REPLACE FUNCTION {capture}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	include_cols text[] := string_to_array(NULLIF(TG_ARGV[2], ''), ',');
	exclude_cols text[] := string_to_array(NULLIF(TG_ARGV[3], ''), ',');
	new_key text;
	old_key text;
	doc jsonb;
BEGIN
	IF TG_OP = 'DELETE' THEN
		INSERT INTO {outbox} (entity, key, version, op)
		VALUES (TG_ARGV[0], to_jsonb(OLD) ->> TG_ARGV[1], nextval({seqlit}), 'delete');
		RETURN NULL;
	END IF;
	new_key := to_jsonb(NEW) ->> TG_ARGV[1];
	doc := {filter}(to_jsonb(NEW), include_cols, exclude_cols);
	IF TG_OP = 'UPDATE' THEN
		old_key := to_jsonb(OLD) ->> TG_ARGV[1];
		IF old_key IS DISTINCT FROM new_key THEN
			-- A changed key is a delete of the old entity and a new one.
			INSERT INTO {outbox} (entity, key, version, op)
			VALUES (TG_ARGV[0], old_key, nextval({seqlit}), 'delete');
		ELSIF doc = {filter}(to_jsonb(OLD), include_cols, exclude_cols) THEN
			-- Only excluded columns changed: nothing to tell the API.
			RETURN NULL;
		END IF;
	END IF;
	INSERT INTO {outbox} (entity, key, version, op, data)
	VALUES (TG_ARGV[0], new_key, NEW.eventsync_version, 'upsert', doc);
	RETURN NULL;
END
$$;

-- Wake relays once per inserting statement; NOTIFY folds duplicates within
-- a transaction, so a bulk update costs one notification.
CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify({channel}, '');
	RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS eventsync_outbox_notify ON {outbox};
CREATE TRIGGER eventsync_outbox_notify AFTER INSERT ON {outbox}
	FOR EACH STATEMENT EXECUTE FUNCTION {notify}();
`

// triggerArgs renders the capture trigger's arguments as SQL literals.
func triggerArgs(entity, key string, include, exclude []string) string {
	return fmt.Sprintf("%s, %s, %s, %s",
		quoteLiteral(entity), quoteLiteral(key),
		quoteLiteral(strings.Join(include, ",")), quoteLiteral(strings.Join(exclude, ",")))
}
