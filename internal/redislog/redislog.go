// Package redislog routes go-redis's internal log to slog at debug level.
// go-redis v9 prints its pool's dial failures and retries straight to
// stderr ("redis: … connection pool: failed to dial after 5 attempts"),
// four lines before the adapter's own error says Redis is unreachable and
// what to check; and it has one logger per process, not one per client.
package redislog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	goredis "github.com/redis/go-redis/v9"
)

var (
	current atomic.Pointer[slog.Logger]
	install sync.Once
)

// Route sends go-redis's log lines to log (nil: slog.Default()) at debug
// level from now on. As go-redis has one process-wide logger, the last
// logger given receives every client's lines, and a logger set earlier
// with redis.SetLogger is replaced; set it again after Route to keep it.
func Route(log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	current.Store(log)
	install.Do(func() { goredis.SetLogger(forwarder{}) })
}

type forwarder struct{}

func (forwarder) Printf(ctx context.Context, format string, v ...any) {
	log := current.Load()
	if !log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}
