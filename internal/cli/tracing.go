package cli

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/tracing"
)

// startTracing turns tracing on when the standard OTEL_* variables ask
// for it (see docs/configuration.md, "Tracing"): it returns the Client
// option that traces the command's relays and workers (none when tracing
// is off) and a stop that flushes the spans still batched, which the
// command defers. role names the process (service.name
// "eventsync-<role>" unless OTEL_SERVICE_NAME says otherwise).
func startTracing(ctx context.Context, env Env, log *slog.Logger, role string) ([]eventsync.Option, func(), error) {
	tp, set, err := tracing.FromEnv(ctx, env.Stderr, "eventsync-"+role, currentBuild().Version)
	if err != nil {
		return nil, nil, usagef("tracing: %w", err)
	}
	if tp == nil {
		return nil, func() {}, nil
	}
	// The SDK reports export failures (a collector that is down) through
	// OpenTelemetry's global handler: into this command's log.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: spans not exported", "err", err)
	}))
	log.Info("tracing on", "exporters", strings.Join(set.Exporters, ","), "endpoint", redact.URL(set.Endpoint))
	stop := func() {
		// Flush what is batched; a collector that does not answer costs
		// at most this long at exit.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("tracing: flushing the last spans failed", "err", err)
		}
	}
	return []eventsync.Option{eventsync.WithTracerProvider(tp)}, stop, nil
}
