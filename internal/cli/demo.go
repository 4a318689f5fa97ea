package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/eventsync/eventsync/internal/demo"
)

// runDemo runs the whole system in this process and reports whether it
// converged; see internal/demo and docs/demo.md.
func runDemo(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "demo", "[flags]")
	def := demo.Config{}.WithDefaults()
	var cfg demo.Config
	fs.IntVar(&cfg.Entities, "entities", def.Entities, "listings in the application database at the start")
	fs.DurationVar(&cfg.Duration, "duration", def.Duration, "how long the application workload writes after the initial sync; the resync starts half way")
	fs.IntVar(&cfg.Rate, "rate", def.Rate, "workload transactions per second (1 to 5 row changes each, ~5% rolled back)")
	fs.IntVar(&cfg.Workers, "workers", def.Workers, "in-process workers, each with its own bus, store and HTTP connections")
	fs.IntVar(&cfg.Concurrency, "concurrency", def.Concurrency, "events in flight per worker")
	fs.StringVar(&cfg.Faults, "faults", def.Faults, "fake API faults and bus chaos: none, realistic or heavy")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for the embedded NATS data, app.db, fakeapi.json and demo.log; cleared first if an earlier demo made it (default: a new temporary directory, kept)")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for the workload, chaos and fault dice; 0 picks one (printed in the report)")
	quiet := fs.Bool("quiet", false, "print only the final report, no progress")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	// Zero would silently mean "default" in demo.Config; on the command
	// line it is a mistake.
	for _, f := range []struct {
		name string
		val  int
	}{{"entities", cfg.Entities}, {"rate", cfg.Rate}, {"workers", cfg.Workers}, {"concurrency", cfg.Concurrency}} {
		if f.val < 1 {
			return fmt.Errorf("--%s %d: must be at least 1", f.name, f.val)
		}
	}
	if cfg.Duration <= 0 {
		return fmt.Errorf("--duration %s: must be positive, e.g. 20s", cfg.Duration)
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		return err
	}
	if !*quiet {
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
