package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
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
	// Flags override the file and the environment; validate the result.
	if f.concurrency != 0 {
		cfg.Worker.Concurrency = f.concurrency
	}
	if f.streams != "" {
		parsed, err := bus.ParseStreams(f.streams)
		if err != nil {
			return usagef("--streams: %w", err)
		}
		cfg.Worker.Streams = nil
		for _, s := range parsed {
			cfg.Worker.Streams = append(cfg.Worker.Streams, string(s))
		}
	}
	if err := cfg.Validate(); err != nil {
		return usagef("invalid configuration:\n%w", err)
	}

	traceOpts, stopTracing, err := startTracing(ctx, env, log, "worker")
	if err != nil {
		return err
	}
	defer stopTracing()
	reg := newRegistry()
	res, err := openResources(ctx, cfg, log, needBus|needStore, append(traceOpts, eventsync.WithRegisterer(reg))...)
	if err != nil {
		return err
	}
	defer res.Close()
	w, err := res.Client.NewWorker(ctx, eventsync.WithWorkerID(f.workerID))
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
	}, map[string]healthCheck{"bus": busCheck(res.Bus, bus.Live), "store": storeCheck(res.Store)}, cfg.Admin.Pprof, log)
	if err != nil {
		return err
	}
	defer srv.Stop()
	wc := res.Client.Config().Worker
	log.Info("worker starting", "streams", strings.Join(wc.Streams, ","), "concurrency", wc.Concurrency, "bus", res.BusName, "store", res.StoreName)
	err = w.Run(ctx)
	log.Info("worker stopped")
	return err
}
