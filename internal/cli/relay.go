package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/redact"
)

// relayFlags are the flags of "eventsync relay".
type relayFlags struct {
	conn           connFlags
	rc             eventsync.RelayConfig
	admin          string
	concurrencySet bool // --concurrency given: keep it even on SQLite
}

func newRelayCmd(env Env) *cobra.Command {
	f := &relayFlags{}
	cmd := &cobra.Command{
		Use:   "relay --source URL --bus URL",
		Short: "publish outbox rows to the live stream",
		Long: `Claim committed outbox rows, publish them to the live stream with confirms
and mark them sent, until SIGINT or SIGTERM. Several relays may run at once.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.concurrencySet = cmd.Flags().Changed("concurrency")
			return runRelay(cmd.Context(), env, f)
		},
	}
	fs := cmd.Flags()
	f.conn.register(fs, flagConfig, flagSource, flagBus, flagNamespace, flagDataDir, flagLogLevel)
	fs.IntVar(&f.rc.BatchSize, "batch-size", 500, "outbox rows per claim and per confirmed publish")
	fs.DurationVar(&f.rc.PollInterval, "poll-interval", time.Second, "longest wait for new rows when no notification arrives (SQLite polls at least every 100ms)")
	fs.DurationVar(&f.rc.Retention, "retention", 24*time.Hour, "how long sent rows stay in the outbox before cleanup deletes them")
	fs.IntVar(&f.rc.Concurrency, "concurrency", 4, "claim-publish loops running at once (claims never overlap; 1 on SQLite unless set)")
	const adminDefault = "127.0.0.1:9091"
	fs.StringVar(&f.admin, "admin", adminDefault, "admin HTTP address for /metrics and /healthz; \"off\" (or empty) disables")
	// The relay's name for --admin before it matched the worker's.
	fs.StringVar(&f.admin, "metrics-addr", adminDefault, "same as --admin")
	deprecate(fs, "metrics-addr", "admin")
	return cmd
}

// runRelay publishes outbox rows to the live stream until interrupted.
func runRelay(ctx context.Context, env Env, f *relayFlags) error {
	rc := f.rc
	cfg, err := f.conn.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)

	traceOpts, stopTracing, err := startTracing(ctx, env, log, "relay")
	if err != nil {
		return err
	}
	defer stopTracing()
	reg := newRegistry()
	res, err := openResources(ctx, cfg, log, needBus|needSource, append(traceOpts, eventsync.WithRegisterer(reg))...)
	if err != nil {
		return err
	}
	defer res.Close()
	if !f.concurrencySet {
		rc.Concurrency = 0 // the relay's default: 4, or 1 on SQLite (one writer at a time)
	}
	r, err := res.Client.NewRelay(ctx, rc)
	if err != nil {
		return err
	}
	addr := f.admin
	if addr == "off" {
		addr = ""
	}
	admin, err := startAdmin(addr, reg, nil, map[string]healthCheck{"bus": busCheck(res.Bus, bus.Live), "source": func(ctx context.Context) error {
		_, err := res.Source.Backlog(ctx)
		return err
	}}, cfg.Admin.Pprof, log)
	if err != nil {
		return err
	}
	defer admin.Stop()
	log.Info("relaying outbox", "source", redact.URL(cfg.Source), "bus", res.BusName)
	return r.Run(ctx)
}
