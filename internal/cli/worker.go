package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
)

// workerFlags are the flags of "eventsync worker".
type workerFlags struct {
	conn        connFlags
	concurrency int
	streams     string
	admin       string
	workerID    string
}

func newWorkerCmd(env Env) *cobra.Command {
	f := &workerFlags{}
	cmd := &cobra.Command{
		Use:   "worker --config FILE",
		Short: "apply events from the bus to the third-party API",
		Long: `Consume the live and resync streams and apply each event to the third-party
API of the config file's sink section, until SIGINT or SIGTERM (in-flight
events finish within worker.shutdown_grace). Run as many workers as you like
against the same bus and state store.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runWorker(cmd.Context(), env, f) },
	}
	fs := cmd.Flags()
	f.conn.register(fs, flagConfig, flagBus, flagStore, flagNamespace, flagDataDir, flagLogLevel)
	fs.IntVar(&f.concurrency, "concurrency", 0, "events in flight at once (default 256; env: EVENTSYNC_WORKER_CONCURRENCY)")
	fs.StringVar(&f.streams, "streams", "", "streams to consume: live, resync or live,resync (default both; env: EVENTSYNC_WORKER_STREAMS)")
	fs.StringVar(&f.admin, "admin", "", "admin HTTP address for /metrics, /healthz and /status (default 127.0.0.1:9090; \"off\" disables; env: EVENTSYNC_ADMIN_LISTEN)")
	fs.StringVar(&f.workerID, "worker-id", "", "name of this worker in leases and status (default host-pid)")
	return cmd
}

func runWorker(ctx context.Context, env Env, f *workerFlags) error {
	cfg, err := f.conn.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)

	if !cfg.HasSink() {
		return usagef("no sink configured: add a \"sink:\" section with your entities to the file given with --config (see README, \"Configuration\")")
	}
	sinkCfg := cfg.Sink

	wcfg := engine.Config{
		WorkerID:           f.workerID,
		Concurrency:        cfg.Worker.Concurrency,
		Prefetch:           cfg.Worker.Prefetch,
		ResyncConcurrency:  cfg.Worker.ResyncConcurrency,
		LeaseTTL:           cfg.Worker.LeaseTTL,
		MaxAttempts:        cfg.Worker.MaxAttempts,
		BackoffBase:        cfg.Worker.BackoffBase,
		BackoffMax:         cfg.Worker.BackoffMax,
		MaxEventBytes:      cfg.Worker.MaxEventBytes,
		ShutdownGrace:      cfg.Worker.ShutdownGrace,
		Entities:           sinkCfg.Entities(),
		LookupBeforeCreate: cfg.Worker.LookupBeforeCreate,
		Logger:             log,
		Breaker:            engine.BreakerConfig{Failures: cfg.Worker.BreakerFails, OpenFor: cfg.Worker.BreakerOpenFor},
	}
	if f.concurrency != 0 {
		wcfg.Concurrency = f.concurrency
	}
	streamList := cfg.Worker.Streams
	if f.streams != "" {
		parsed, err := bus.ParseStreams(f.streams)
		if err != nil {
			return usagef("--streams: %w", err)
		}
		wcfg.Streams = parsed
	} else {
		for _, s := range streamList {
			wcfg.Streams = append(wcfg.Streams, bus.Stream(s))
		}
	}
	if err := wcfg.WithDefaults().Validate(); err != nil {
		return usagef("invalid configuration:\n%w", err)
	}

	reg := newRegistry()
	metrics := engine.NewMetrics(reg)
	sk, err := httpsink.New(sinkCfg, httpsink.WithLogger(log), httpsink.WithObserver(func(op, entity string, status int, d time.Duration, err error) {
		metrics.ObserveSink(op, entity, status, d, err)
	}))
	if err != nil {
		return fmt.Errorf("config key sink: %w", err)
	}

	res, err := openResources(ctx, cfg, log, needBus|needStore)
	if err != nil {
		return err
	}
	defer res.Close()

	var target sink.Sink = sk
	if cfg.Throttle.On() {
		lim, closeLimiter, err := openLimiter(ctx, res, cfg.Namespace)
		if err != nil {
			return fmt.Errorf("throttle: %w (or set throttle.enabled: false)", err)
		}
		defer closeLimiter()
		ts, err := throttle.New(sk, cfg.Throttle.Config, throttle.Options{Name: cfg.Namespace + "/sink", Limiter: lim, Metrics: throttle.NewMetrics(reg), Logger: log})
		if err != nil {
			return fmt.Errorf("config key throttle: %w", err)
		}
		target = ts
	}

	w, err := engine.NewWorker(res.Bus, res.Store, target, wcfg, metrics)
	if err != nil {
		return err
	}
	addr := cfg.Admin.Listen
	if f.admin != "" {
		addr = f.admin
	}
	if addr == "" {
		addr = "127.0.0.1:9090"
	}
	if addr == "off" {
		addr = ""
	}
	srv, err := startAdmin(addr, reg, map[string]http.Handler{
		"GET /status": http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
			rw.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(rw).Encode(w.Status())
		}),
	}, log)
	if err != nil {
		return err
	}
	defer srv.Stop()
	log.Info("worker starting", "streams", fmt.Sprint(wcfg.WithDefaults().Streams), "concurrency", wcfg.WithDefaults().Concurrency, "bus", res.BusName, "store", res.StoreName)
	err = w.Run(ctx)
	log.Info("worker stopped")
	return err
}
