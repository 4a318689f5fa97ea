// Package cli implements the eventsync command line on cobra and pflag. Each
// command lives in its own file, declares its flags and runs its body; this
// file builds the command tree, runs it, prints the error if any, and maps
// the outcome to one exit-code convention, so that cmd/eventsync stays a
// few lines.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes, the same for every command. verify refines 1 and 2 like
// diff(1): 1 diverged, 2 could not check (see verify.go).
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Env carries the process's standard streams to a command.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// ExitError carries a specific exit code (verify uses 1 and 2). With a nil
// Err nothing is printed.
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

const rootLong = `eventsync keeps a third-party API in sync with your application's data.

Commands read the YAML file given with --config (env EVENTSYNC_CONFIG);
EVENTSYNC_* environment variables override it and flags override both.
Commands that operate a deployment need its bus and state store (--config,
or --bus and --store); only "eventsync demo", and commands given --data-dir,
run an embedded bus and store in their own process.`

// Run executes one command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	// started is set once flags and arguments parsed; an error before is
	// a usage error whatever cobra called it.
	started := false
	root := newRoot(env, &started)
	root.SetArgs(args)
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		registerCompletions(root)
	}
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if !started {
		err = usage(err)
	}
	return report(stderr, cmd, err)
}

// report prints err once, as "eventsync <command>: <err>", with its hint
// on the next line, and returns the exit code.
func report(w io.Writer, cmd *cobra.Command, err error) int {
	code := exitFailure
	var exit *ExitError
	var usageErr *usageError
	switch {
	case errors.As(err, &exit):
		code = exit.Code
		if exit.Err == nil {
			return code
		}
	case errors.As(err, &usageErr):
		code = exitUsage
	}
	name := "eventsync"
	if cmd != nil {
		name = cmd.CommandPath()
	}
	fmt.Fprintf(w, "%s: %v\n", name, err)
	if h := hint(err); h != "" {
		fmt.Fprintln(w, h)
	}
	return code
}

func newRoot(env Env, started *bool) *cobra.Command {
	root := &cobra.Command{
		Use:           "eventsync",
		Short:         "keep a third-party API in sync with your application's data",
		Long:          rootLong,
		Version:       currentBuild().String(),
		SilenceErrors: true, // report prints them, once
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE:          runGroup,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			*started = true
			noteDeprecated(env.Stderr, cmd)
			return checkRequired(cmd)
		},
		SuggestionsMinimumDistance: 2,
	}
	root.Flags().BoolP("version", "v", false, "print the version, commit and build date")
	root.SetVersionTemplate("eventsync {{.Version}}\n")
	// Before the completion command, which keeps the writer it finds.
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.SetFlagErrorFunc(flagError)
	root.SetUsageFunc(writeUsage)
	root.SetHelpCommand(newHelpCmd())
	root.AddCommand(
		newVersionCmd(env),
		newFakeAPICmd(env),
		newWorkerCmd(env),
		newPublishCmd(env),
		newCtlCmd(env),
		newConsoleCmd(env),
		newOutboxCmd(env),
		newRelayCmd(env),
		newResyncCmd(env),
		newVerifyCmd(env),
		newDemoCmd(env),
		newHealthcheckCmd(env),
	)
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Short = "print the shell completion script for bash, zsh, fish or powershell"
		}
	}
	return root
}

// newGroup returns a command whose subcommands do the work: alone it
// prints its help, with an unknown subcommand it suggests the closest.
func newGroup(name, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:                        name,
		Short:                      short,
		Long:                       long,
		Args:                       cobra.ArbitraryArgs,
		RunE:                       runGroup,
		SuggestionsMinimumDistance: 2,
	}
}

func runGroup(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	return unknownCommand(cmd, args[0])
}

// newHelpCmd is "eventsync help [command]": cobra's, except that an unknown
// topic is a usage error with a suggestion.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "help about any command",
		Args:  cobra.ArbitraryArgs,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() && len(sub.Name()) >= len(toComplete) && sub.Name()[:len(toComplete)] == toComplete {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil {
				return usage(err)
			}
			if len(rest) > 0 {
				return unknownCommand(target, rest[0])
			}
			target.InitDefaultHelpFlag() // list -h in the flags, as "eventsync worker -h" does
			return target.Help()
		},
	}
}

// registerCompletions gives value completions to the flags that take one
// of a few words. Only done for a completion request: cobra keeps them in
// a process-wide table.
func registerCompletions(root *cobra.Command) {
	words := map[string]cobra.CompletionFunc{
		"stream":    completeWords("live", "resync"),
		"streams":   completeWords("live", "resync", "live,resync"),
		"log-level": completeWords("debug", "info", "warn", "error"),
		"faults":    completeWords("none", "realistic", "heavy"),
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalNonPersistentFlags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if fn, ok := words[f.Name]; ok {
					_ = c.RegisterFlagCompletionFunc(f.Name, fn)
				}
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
