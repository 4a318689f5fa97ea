package postgres_test

import (
	"context"
	"database/sql"
	"log/slog"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the suite's application writes
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newSchema creates a schema for one test and returns a DSN whose
// search_path points at it, so the application's unqualified table names
// land there too.
func newSchema(t *testing.T) string {
	t.Helper()
	base := testenv.Postgres(t)
	schema := testenv.UniqueName("es_src")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Logf("cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("cleanup: drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func newEnv(t *testing.T) sourcetest.Env {
	dsn := newSchema(t)
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
	sourcetest.Run(t, newEnv, sourcetest.Features{ConcurrentWriters: true})
}
