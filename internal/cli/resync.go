package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/resync"
)

// resyncFlags are the flags of "eventsync resync".
type resyncFlags struct {
	conn          connFlags
	spec          resync.Spec
	cols, exclude string
	drainStable   time.Duration
	jsonOut       bool
}

func newResyncCmd(env Env) *cobra.Command {
	f := &resyncFlags{}
	cmd := &cobra.Command{
		Use:   "resync --source URL --table T --entity E --key COL",
		Short: "publish a consistent snapshot of a table to the resync stream, resumable",
		Long: `Read a table in one consistent snapshot, page by page, and publish an upsert
event per row to the resync stream, checkpointing each page in the state
store: an interrupted run continues where it stopped when run again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runResync(cmd.Context(), env, f) },
	}
	fs := cmd.Flags()
	f.conn.register(fs, flagConfig, flagSource, flagBus, flagStore, flagNamespace, flagDataDir, flagLogLevel)
	spec := &f.spec
	fs.StringVar(&spec.Table, "table", "", "table to snapshot (schema.table allowed on PostgreSQL)")
	fs.StringVar(&spec.Entity, "entity", "", "entity name of its events, [a-z][a-z0-9_]*")
	fs.StringVar(&spec.KeyColumn, "key", "", "column whose value is the event key; pages are read in its order")
	fs.StringVar(&spec.VersionColumn, "version-col", "", "column holding the row's version (default eventsync_version, stamped by \"eventsync outbox install-trigger\")")
	fs.StringVar(&spec.Where, "where", "", "SQL condition selecting the rows to resync, e.g. \"archived = false\"")
	fs.StringVar(&f.cols, "columns", "", "comma-separated columns to put in the event data (default: those of the table's outbox trigger, else all; another list is refused)")
	fs.StringVar(&f.exclude, "exclude-columns", "", "comma-separated columns never to put in the event data (default: those of the table's outbox trigger; another list is refused)")
	fs.IntVar(&spec.PageSize, "page-size", resync.DefaultPageSize, "rows per page, per confirmed publish and per checkpoint")
	fs.StringVar(&spec.RunID, "run-id", "", "name of the run and its checkpoint (default: entity plus a hash of table, key, where and columns)")
	fs.BoolVar(&spec.Restart, "restart", false, "ignore the run's checkpoint and start from the first row")
	fs.BoolVar(&spec.DryRun, "dry-run", false, "count the rows and say what would happen; publish nothing")
	fs.BoolVar(&spec.PauseLive, "pause-live", false, "pause the live stream for every worker, resume it once the resync stream is applied")
	fs.BoolVar(&spec.DeleteMissing, "delete-missing", false, "after a complete run, find entities the state store knows but the table no longer has (report only without --yes)")
	fs.BoolVar(&spec.ApplyDeletes, "yes", false, "with --delete-missing: publish a delete for each missing entity")
	fs.DurationVar(&f.drainStable, "drain-stable", 3*time.Second, "with --pause-live: how long the resync stream must stay drained before live resumes")
	fs.BoolVar(&f.jsonOut, "json", false, "print the result as JSON")
	markRequired(cmd, "table", "entity", "key")
	return cmd
}

// runResync publishes a consistent snapshot of a table to the resync stream.
func runResync(ctx context.Context, env Env, f *resyncFlags) error {
	spec := f.spec
	spec.Columns, spec.ExcludeColumns = splitList(f.cols), splitList(f.exclude)
	if spec.ApplyDeletes && !spec.DeleteMissing {
		return usage(errors.New("--yes only confirms --delete-missing; add --delete-missing or drop --yes"))
	}
	if spec.DryRun && spec.PauseLive {
		return usage(errors.New("--dry-run does not pause anything; drop --pause-live or --dry-run"))
	}
	if err := spec.WithDefaults().Validate(); err != nil {
		return usage(err)
	}
	cfg, err := f.conn.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)

	what := needStore | needSource
	if !spec.DryRun {
		what |= needBus
	}
	traceOpts, stopTracing, err := startTracing(ctx, env, log, "resync")
	if err != nil {
		return err
	}
	defer stopTracing()
	res, err := openResources(ctx, cfg, log, what, traceOpts...)
	if err != nil {
		return err
	}
	defer res.Close()

	printer := resync.NewPrinter(env.Stderr, isTerminal(env.Stderr), log)
	run, err := res.Client.NewResync(spec, eventsync.ResyncOptions{Progress: printer.Update, DrainStable: f.drainStable})
	if err != nil {
		return usage(err)
	}
	if !spec.DryRun {
		log.Info("resync starting", "table", spec.Table, "entity", spec.Entity, "source", redact.URL(cfg.Source), "bus", res.BusName, "store", res.StoreName)
	}
	err = run.Run(ctx)
	result := run.Result()
	printer.Finish()
	if result.RunID == "" && err != nil {
		return err // it failed before it started (a mistyped table): there is no run to report
	}
	if f.jsonOut {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(result)
	} else {
		printResyncResult(env, spec, result)
	}
	return err
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func printResyncResult(env Env, spec resync.Spec, r resync.Result) {
	out := env.Stdout
	switch {
	case r.DryRun:
		from := "from the first row"
		if r.Resumed {
			from = fmt.Sprintf("after key %q (checkpoint: %d of %d rows done)", r.ResumedAfter, r.Rows, r.Total)
		} else if r.PreviousDone {
			from = "from the first row (the previous run with this id completed)"
		}
		pages := (r.Remaining + int64(spec.WithDefaults().PageSize) - 1) / int64(spec.WithDefaults().PageSize)
		fmt.Fprintf(out, "dry run %s: would publish %d upsert events (%d pages) to the resync stream %s; nothing published\n", r.RunID, r.Remaining, pages, from)
	case r.Done:
		fmt.Fprintf(out, "resync %s: published %d events (%d pages) in %s; run total %d rows", r.RunID, r.SegmentRows, r.Pages, r.Elapsed.Round(time.Millisecond), r.Rows)
		if r.Resumed {
			fmt.Fprintf(out, ", resumed after key %q", r.ResumedAfter)
		}
		fmt.Fprintln(out)
		if r.LivePaused {
			fmt.Fprintf(out, "live was paused during the run and resumed after the resync stream drained (waited %s)\n", r.DrainWait.Round(time.Millisecond))
		}
	default:
		fmt.Fprintf(out, "resync %s interrupted after %d of %d rows; run the same command again to continue from the checkpoint\n", r.RunID, r.Rows, r.Total)
	}
	if m := r.Missing; m != nil {
		switch {
		case m.Applied:
			fmt.Fprintf(out, "delete-missing: %d entities known to the store are not in %s; published %d delete events", m.Missing, spec.Table, m.Published)
		default:
			fmt.Fprintf(out, "delete-missing (dry run): %d entities known to the store are not in %s; add --yes to delete them remotely", m.Missing, spec.Table)
		}
		if m.Changed > 0 || m.Ambiguous > 0 {
			fmt.Fprintf(out, " (%d changed meanwhile and %d with ambiguous hashes left alone)", m.Changed, m.Ambiguous)
		}
		fmt.Fprintln(out)
		if len(m.Sample) > 0 {
			fmt.Fprintf(out, "  e.g. %s\n", strings.Join(m.Sample, ", "))
		}
	}
}
