package redislog_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/redislog"
)

// An unreachable Redis: the pool's dial failures reach the given logger at
// debug level, so they are silent at info and show under debug.
func TestRouteSendsPoolLinesToSlogAtDebug(t *testing.T) {
	var debug, info bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, tc := range []struct {
		buf   *bytes.Buffer
		level slog.Level
	}{{&debug, slog.LevelDebug}, {&info, slog.LevelInfo}} {
		redislog.Route(slog.New(slog.NewTextHandler(tc.buf, &slog.HandlerOptions{Level: tc.level})))
		rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 2 * time.Second})
		if err := rdb.Ping(ctx).Err(); err == nil {
			t.Fatal("ping of 127.0.0.1:1 succeeded")
		}
		_ = rdb.Close()
	}
	if !strings.Contains(debug.String(), "level=DEBUG") || !strings.Contains(debug.String(), "failed to dial") {
		t.Errorf("debug logger got %q, want the pool's dial failure at DEBUG", debug.String())
	}
	if info.Len() != 0 {
		t.Errorf("info logger got %q, want nothing", info.String())
	}
}
