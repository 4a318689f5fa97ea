package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/eventsync/eventsync/internal/demo"
)

func newDemoCmd(env Env) *cobra.Command {
	var (
		cfg   demo.Config
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "run everything in one process on an embedded bus and prove it converges",
		Long: `Run the whole system in this process (embedded NATS, a SQLite application
with a workload, relay, workers, faults, a resync with live paused half way)
and report whether the API converged; exit 0 only if it did (docs/demo.md).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDemo(cmd.Context(), env, cfg, quiet) },
	}
	fs := cmd.Flags()
	def := demo.Config{}.WithDefaults()
	fs.IntVar(&cfg.Entities, "entities", def.Entities, "listings in the application database at the start")
	fs.DurationVar(&cfg.Duration, "duration", def.Duration, "how long the application workload writes after the initial sync; the resync starts half way")
	fs.IntVar(&cfg.Rate, "rate", def.Rate, "workload transactions per second (1 to 5 row changes each, ~5% rolled back)")
	fs.IntVar(&cfg.Workers, "workers", def.Workers, "in-process workers, each with its own bus, store and HTTP connections")
	fs.IntVar(&cfg.Concurrency, "concurrency", def.Concurrency, "events in flight per worker")
	fs.StringVar(&cfg.Faults, "faults", def.Faults, "fake API faults and bus chaos: none, realistic or heavy")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded NATS data, app.db, fakeapi.json and demo.log; cleared first if an earlier demo made it (default: a new temporary directory, kept)")
	_ = fs.SetAnnotation("data-dir", cobra.BashCompSubdirsInDir, []string{})
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for the workload, chaos and fault dice; 0 picks one (printed in the report)")
	fs.BoolVar(&quiet, "quiet", false, "print only the final report, no progress")
	return cmd
}

// runDemo runs the whole system in this process and reports whether it
// converged; see internal/demo and docs/demo.md.
func runDemo(ctx context.Context, env Env, cfg demo.Config, quiet bool) error {
	// Zero would silently mean "default" in demo.Config; on the command
	// line it is a mistake.
	for _, f := range []struct {
		name string
		val  int
	}{{"entities", cfg.Entities}, {"rate", cfg.Rate}, {"workers", cfg.Workers}, {"concurrency", cfg.Concurrency}} {
		if f.val < 1 {
			return usagef("--%s %d: must be at least 1", f.name, f.val)
		}
	}
	if cfg.Duration <= 0 {
		return usagef("--duration %s: must be positive, e.g. 20s", cfg.Duration)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return usage(err)
	}
	if !quiet {
		cfg.Progress = env.Stdout
		if f, ok := env.Stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			cfg.Interactive = true
			if w, _, err := term.GetSize(int(f.Fd())); err == nil {
				cfg.Width = w
			}
		}
		fmt.Fprintf(env.Stdout, "eventsync demo: %d listings, %s of workload, %d workers, faults %s. Ctrl-C stops it.\n",
			cfg.Entities, cfg.Duration, cfg.Workers, cfg.Faults)
	}
	report, err := demo.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	report.Write(env.Stdout)
	fmt.Fprintln(env.Stdout)
	fmt.Fprintln(env.Stdout, "Next: look around what the demo left behind:")
	for _, c := range demo.NextSteps(report.DataDir) {
		fmt.Fprintf(env.Stdout, "  %s\n", c)
	}
	if !report.OK() {
		return &ExitError{Code: 1, Err: errors.New(strings.Join(report.Problems, "; "))}
	}
	return nil
}
