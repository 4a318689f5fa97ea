// Package cli implements the eventsync subcommands. Each subcommand lives in
// its own file and parses its own flags; this file only dispatches, so that
// cmd/eventsync stays a few lines.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Env carries the process's standard streams to a subcommand.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

type command struct {
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

// commands is the single table of subcommands.
func commands() map[string]command {
	return map[string]command{
		"version": {"print the eventsync version", runVersion},
		"fakeapi": {"run the third-party API simulator (faults, detectors)", runFakeAPI},
		"worker":  {"apply events from the bus to the third-party API", runWorker},
		"publish": {"publish newline-delimited events from a file or stdin, with confirms", runPublish},
		"ctl":     {"operate a running deployment: pause, resume, status, parked events", runCtl},
		"outbox":  {"install the outbox and table triggers in the source database", runOutbox},
		"relay":   {"publish outbox rows to the live stream", runRelay},
		"resync":  {"publish a consistent snapshot of a table to the resync stream, resumable", runResync},
		"verify":  {"compare the source of truth with the API; report and repair drift", runVerify},
		"demo":    {"run everything in one process on an embedded bus and prove it converges", runDemo},
	}
}

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// ExitError carries a specific exit code (verify uses 1 and 2).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// Run executes one command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout, cmds)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "eventsync: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	err := cmd.run(ctx, env, args[1:])
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var exit *ExitError
	if errors.As(err, &exit) {
		if exit.Err != nil {
			fmt.Fprintf(stderr, "eventsync %s: %v\n", args[0], exit.Err)
		}
		return exit.Code
	}
	fmt.Fprintf(stderr, "eventsync %s: %v\n", args[0], err)
	return 1
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "eventsync keeps a third-party API in sync with your application's data.")
	fmt.Fprintln(w, "\nUsage: eventsync <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun \"eventsync <command> -h\" for a command's flags.")
}

// newFlagSet returns a FlagSet whose errors name the command and its help.
func newFlagSet(env Env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.Stderr, "Usage: eventsync %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and refuses stray positional arguments unless
// allowed, so a typo like "--streams live resync" is an error, not ignored.
func parseFlags(fs *flag.FlagSet, args []string, maxPositional int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > maxPositional {
		return fmt.Errorf("unexpected argument(s) %q; run \"eventsync %s -h\" for usage", strings.Join(fs.Args()[maxPositional:], " "), fs.Name())
	}
	return nil
}

func runVersion(_ context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "version", "")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "eventsync", Version)
	return nil
}
