package cli

import (
	"context"
	"flag"
	"time"

	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/source/sqlite"
)

// runRelay publishes outbox rows to the live stream until interrupted.
func runRelay(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "relay", "--source URL --bus URL [flags]")
	cf := addConnFlags(fs, "source", "bus")
	var rc relay.Config
	fs.IntVar(&rc.BatchSize, "batch-size", 500, "outbox rows per claim and per confirmed publish")
	fs.DurationVar(&rc.PollInterval, "poll-interval", time.Second, "longest wait for new rows when no notification arrives (SQLite polls at least every 100ms)")
	fs.DurationVar(&rc.Retention, "retention", 24*time.Hour, "how long sent rows stay in the outbox before cleanup deletes them")
	fs.IntVar(&rc.Concurrency, "concurrency", 4, "claim-publish loops running at once (claims never overlap; 1 on SQLite unless set)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9091", "address for /metrics and /healthz; empty disables")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	cfg, err := cf.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)

	res, err := openResources(ctx, cfg, log, needBus)
	if err != nil {
		return err
	}
	defer res.Close()
	src, err := openSource(ctx, cfg.Source, log)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	// Fail at start, not in a retry loop, when the outbox is missing.
	if _, err := src.Backlog(ctx); err != nil {
		return err
	}

	reg := newRegistry()
	rc.Registerer, rc.Logger = reg, log
	// The relay rejects what the worker would park as too large.
	rc.MaxEventBytes = cfg.Worker.MaxEventBytes
	if _, isSQLite := src.(*sqlite.Source); isSQLite && !flagSet(fs, "concurrency") {
		rc.Concurrency = 1 // SQLite has one writer at a time; a second loop only waits
	}
	r, err := relay.New(src, res.Bus, rc)
	if err != nil {
		return err
	}
	admin, err := startAdmin(*metricsAddr, reg, nil, log)
	if err != nil {
		return err
	}
	defer admin.Stop()
	log.Info("relaying outbox", "source", config.Redact(cfg.Source), "bus", res.BusName)
	return r.Run(ctx)
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
