package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/source/postgres"
	"github.com/eventsync/eventsync/source/sqlite"
)

// openSource picks the source adapter from the URL's scheme:
// postgres:// or postgresql:// → PostgreSQL, sqlite://path → SQLite
// (sqlite:///abs/path for an absolute path, sqlite://rel/path for a
// relative one).
func openSource(ctx context.Context, rawURL string, log *slog.Logger) (source.Source, error) {
	switch {
	case rawURL == "":
		return nil, errors.New("no source database; set --source postgres://user@host:5432/db or sqlite:///path/app.db (or source: in the config file)")
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return postgres.Open(ctx, postgres.Config{DSN: rawURL, Logger: log})
	case strings.HasPrefix(rawURL, "sqlite://"):
		path := strings.TrimPrefix(rawURL, "sqlite://")
		if path == "" {
			return nil, errors.New("--source sqlite:// needs a path: sqlite:///abs/path/app.db or sqlite://relative/app.db")
		}
		// The application's database must exist; a typo must not create
		// an empty one that the relay then watches forever.
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("SQLite source %s: %w; check the path in --source (sqlite:///abs/path/app.db)", path, err)
		}
		return sqlite.Open(ctx, sqlite.Config{Path: path, Logger: log})
	}
	return nil, fmt.Errorf("unsupported --source %q; use postgres://user@host:5432/db or sqlite:///path/app.db", config.Redact(rawURL))
}

// runOutbox dispatches "eventsync outbox <install|install-trigger|remove-trigger>".
func runOutbox(ctx context.Context, env Env, args []string) error {
	const usage = `Usage: eventsync outbox <subcommand> [flags]

Subcommands:
  install          create or upgrade the outbox table, sequence and functions
  install-trigger  capture a table's inserts, updates and deletes into the outbox
  remove-trigger   stop capturing a table (versions keep being stamped)

Run "eventsync outbox <subcommand> -h" for its flags.`
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.Stdout, usage)
		return nil
	}
	switch args[0] {
	case "install":
		return runOutboxInstall(ctx, env, args[1:])
	case "install-trigger":
		return runOutboxInstallTrigger(ctx, env, args[1:])
	case "remove-trigger":
		return runOutboxRemoveTrigger(ctx, env, args[1:])
	}
	return fmt.Errorf("unknown subcommand %q; use install, install-trigger or remove-trigger", args[0])
}

// withSource loads the shared configuration, opens the source, runs fn and
// closes the source.
func withSource(ctx context.Context, env Env, cf *connFlags, fn func(source.Source, *slog.Logger) error) error {
	cfg, err := cf.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)
	src, err := openSource(ctx, cfg.Source, log)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	return fn(src, log)
}

func runOutboxInstall(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "outbox install", "--source URL")
	cf := addConnFlags(fs, "source")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	return withSource(ctx, env, cf, func(src source.Source, _ *slog.Logger) error {
		if err := src.Install(ctx); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, "outbox installed")
		return nil
	})
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runOutboxInstallTrigger(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "outbox install-trigger", "--source URL --table T --entity E --key COL [--columns a,b] [--exclude-columns c,d]")
	cf := addConnFlags(fs, "source")
	var spec source.TriggerSpec
	var cols, exclude string
	fs.StringVar(&spec.Table, "table", "", "table to capture (schema.table allowed on PostgreSQL)")
	fs.StringVar(&spec.Entity, "entity", "", "entity name of its events, [a-z][a-z0-9_]*")
	fs.StringVar(&spec.KeyColumn, "key", "", "column whose value is the event key (usually the primary key)")
	fs.StringVar(&cols, "columns", "", "comma-separated columns to put in the event data (default: all)")
	fs.StringVar(&exclude, "exclude-columns", "", "comma-separated columns never to put in the event data (secrets)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	spec.Columns, spec.ExcludeColumns = splitList(cols), splitList(exclude)
	var missing []string
	for _, f := range []struct{ flag, val string }{{"--table", spec.Table}, {"--entity", spec.Entity}, {"--key", spec.KeyColumn}} {
		if f.val == "" {
			missing = append(missing, f.flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s; run \"eventsync outbox install-trigger -h\"", strings.Join(missing, ", "))
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	return withSource(ctx, env, cf, func(src source.Source, _ *slog.Logger) error {
		if err := src.InstallTrigger(ctx, spec); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "capturing %s as entity %q (key %s)\n", spec.Table, spec.Entity, spec.KeyColumn)
		return nil
	})
}

func runOutboxRemoveTrigger(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "outbox remove-trigger", "--source URL --table T")
	cf := addConnFlags(fs, "source")
	table := fs.String("table", "", "table to stop capturing")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	if *table == "" {
		return errors.New("missing --table; run \"eventsync outbox remove-trigger -h\"")
	}
	return withSource(ctx, env, cf, func(src source.Source, _ *slog.Logger) error {
		if err := src.RemoveTrigger(ctx, *table); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "stopped capturing %s\n", *table)
		return nil
	})
}
