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
	sourcetest.Run(t, newEnv, sourcetest.Features{})
}
