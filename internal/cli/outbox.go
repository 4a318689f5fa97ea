package cli

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/source"
)

func newOutboxCmd(env Env) *cobra.Command {
	conn := &connFlags{}
	cmd := newGroup("outbox", "install the outbox and table triggers in the source database",
		`Install the transactional outbox in the application database (--source) and
capture tables into it with triggers, without changing application code
(docs/outbox.md).`)
	conn.register(cmd.PersistentFlags(), flagConfig, flagLogLevel)
	cmd.AddCommand(newOutboxInstallCmd(env, conn), newOutboxInstallTriggerCmd(env, conn), newOutboxRemoveTriggerCmd(env, conn))
	return cmd
}

// withSource loads the shared configuration, opens the source, runs fn and
// closes the source.
func withSource(ctx context.Context, env Env, cf *connFlags, fn func(source.Source, *slog.Logger) error) error {
	cfg, err := cf.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)
	res, err := openResources(ctx, cfg, log, needSource)
	if err != nil {
		return err
	}
	defer res.Close()
	return fn(res.Source, log)
}

func newOutboxInstallCmd(env Env, conn *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install --source URL",
		Short: "create or upgrade the outbox table, sequence and functions",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runOutboxInstall(cmd.Context(), env, conn) },
	}
	conn.register(cmd.Flags(), flagSource)
	return cmd
}

func runOutboxInstall(ctx context.Context, env Env, cf *connFlags) error {
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

func newOutboxInstallTriggerCmd(env Env, conn *connFlags) *cobra.Command {
	var (
		spec          source.TriggerSpec
		cols, exclude string
	)
	cmd := &cobra.Command{
		Use:   "install-trigger --source URL --table T --entity E --key COL",
		Short: "capture a table's inserts, updates and deletes into the outbox",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			spec.Columns, spec.ExcludeColumns = splitList(cols), splitList(exclude)
			return runOutboxInstallTrigger(cmd.Context(), env, conn, spec)
		},
	}
	fs := cmd.Flags()
	conn.register(fs, flagSource)
	fs.StringVar(&spec.Table, "table", "", "table to capture (schema.table allowed on PostgreSQL)")
	fs.StringVar(&spec.Entity, "entity", "", "entity name of its events, [a-z][a-z0-9_]*")
	fs.StringVar(&spec.KeyColumn, "key", "", "column whose value is the event key (usually the primary key)")
	fs.StringVar(&cols, "columns", "", "comma-separated columns to put in the event data (default: all)")
	fs.StringVar(&exclude, "exclude-columns", "", "comma-separated columns never to put in the event data (secrets)")
	markRequired(cmd, "table", "entity", "key")
	return cmd
}

func runOutboxInstallTrigger(ctx context.Context, env Env, cf *connFlags, spec source.TriggerSpec) error {
	if err := spec.Validate(); err != nil {
		return usage(err)
	}
	return withSource(ctx, env, cf, func(src source.Source, _ *slog.Logger) error {
		if err := src.InstallTrigger(ctx, spec); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "capturing %s as entity %q (key %s)\n", spec.Table, spec.Entity, spec.KeyColumn)
		return nil
	})
}

func newOutboxRemoveTriggerCmd(env Env, conn *connFlags) *cobra.Command {
	var table string
	cmd := &cobra.Command{
		Use:   "remove-trigger --source URL --table T",
		Short: "stop capturing a table (versions keep being stamped)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOutboxRemoveTrigger(cmd.Context(), env, conn, table)
		},
	}
	conn.register(cmd.Flags(), flagSource)
	cmd.Flags().StringVar(&table, "table", "", "table to stop capturing")
	markRequired(cmd, "table")
	return cmd
}

func runOutboxRemoveTrigger(ctx context.Context, env Env, cf *connFlags, table string) error {
	return withSource(ctx, env, cf, func(src source.Source, _ *slog.Logger) error {
		if err := src.RemoveTrigger(ctx, table); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "stopped capturing %s\n", table)
		return nil
	})
}
