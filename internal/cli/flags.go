package cli

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/eventsync/eventsync/internal/config"
	"github.com/eventsync/eventsync/internal/setting"
)

// connAnnotation marks the shared connection flags so that help lists them
// apart from a command's own flags.
const connAnnotation = "eventsync_connection"

// connFlags are the flags several commands share; they mean the same thing
// everywhere and override the config file and the environment. Each command
// registers only the ones it acts on.
type connFlags struct {
	config    string
	bus       string
	store     string
	source    string
	namespace string
	dataDir   string
	logLevel  string
}

// Names of the shared flags, for register.
const (
	flagConfig    = "config"
	flagBus       = "bus"
	flagStore     = "store"
	flagSource    = "source"
	flagNamespace = "namespace"
	flagDataDir   = "data-dir"
	flagLogLevel  = "log-level"
)

// register adds the named shared flags to fs (a command's own flags, or a
// group's persistent flags when every command of the group uses them).
func (c *connFlags) register(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		switch n {
		case flagConfig:
			fs.StringVar(&c.config, n, "", "YAML config `FILE` (env: EVENTSYNC_CONFIG)")
		case flagBus:
			fs.StringVar(&c.bus, n, "", "bus `URL`: amqp://user:pass@host:5672/ or nats://host:4222 (env: EVENTSYNC_BUS)")
		case flagStore:
			fs.StringVar(&c.store, n, "", "state store `URL`: postgres://…, redis://… or nats://… (env: EVENTSYNC_STORE)")
		case flagSource:
			fs.StringVar(&c.source, n, "", "application database `URL`: postgres://… or sqlite://path (env: EVENTSYNC_SOURCE)")
		case flagNamespace:
			fs.StringVar(&c.namespace, n, "", "prefix of queues, keys and tables (default eventsync; env: EVENTSYNC_NAMESPACE)")
		case flagDataDir:
			fs.StringVar(&c.dataDir, n, "", "`DIR` of an embedded deployment (bus and store in this process), used when no bus or store URL is given (env: EVENTSYNC_DATA_DIR)")
		case flagLogLevel:
			fs.StringVar(&c.logLevel, n, "", "debug, info, warn or error (env: EVENTSYNC_LOG_LEVEL)")
		default:
			panic("cli: no shared flag " + n)
		}
		_ = fs.SetAnnotation(n, connAnnotation, []string{"true"})
		switch n {
		case flagConfig:
			_ = cobra.MarkFlagFilename(fs, n, "yaml", "yml")
		case flagDataDir:
			_ = fs.SetAnnotation(n, cobra.BashCompSubdirsInDir, []string{})
		}
	}
}

// load reads the config file and environment, applies flags, validates.
// Its errors are usage errors: the configuration is wrong, not the world.
func (c *connFlags) load(_ Env) (*config.Config, error) {
	path := c.config
	if path == "" {
		path = lookupEnv("EVENTSYNC_CONFIG")
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, usage(err)
	}
	for _, o := range []struct {
		dst *string
		val string
	}{{&cfg.Bus, c.bus}, {&cfg.Store, c.store}, {&cfg.Source, c.source}, {&cfg.Namespace, c.namespace}, {&cfg.DataDir, c.dataDir}, {&cfg.Log.Level, c.logLevel}} {
		if o.val != "" {
			*o.dst = o.val
		}
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "eventsync"
	}
	// DataDir stays empty unless given (flag, EVENTSYNC_DATA_DIR or
	// data_dir:): only then may a command start an embedded deployment
	// (see openResources), so that a forgotten --config is an error
	// instead of a fresh, empty deployment no worker uses.
	if err := cfg.Validate(); err != nil {
		return nil, usage(fmt.Errorf("invalid configuration:\n%w", err))
	}
	return cfg, nil
}

// errNoDeployment is the refusal to start an embedded deployment nobody
// asked for; what is "bus" or "state store".
func errNoDeployment(what string) error {
	return usagef("no %s given: pass --config FILE (with bus: and store:), or --bus URL and --store URL "+
		"(env EVENTSYNC_CONFIG, EVENTSYNC_BUS, EVENTSYNC_STORE); to use an embedded deployment in this process, "+
		"such as the one \"eventsync demo\" leaves behind, pass --data-dir DIR", what)
}

// usageError marks a mistake in the command line or the configuration:
// exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usage marks err as a usage error (nil stays nil).
func usage(err error) error {
	if err == nil {
		return nil
	}
	return &usageError{err: err}
}

func usagef(format string, a ...any) error { return usage(fmt.Errorf(format, a...)) }

// noArgs refuses positional arguments, so a typo like "--streams live
// resync" is an error, not ignored.
func noArgs(cmd *cobra.Command, args []string) error { return maxArgs(0)(cmd, args) }

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usagef("unexpected argument(s) %q; run \"%s -h\" for usage", strings.Join(args[n:], " "), cmd.CommandPath())
		}
		return nil
	}
}

// checkRequired reports the required flags (cobra.MarkFlagRequired) that
// were not given, all at once and named as typed.
func checkRequired(cmd *cobra.Command) error {
	var missing []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if req := f.Annotations[cobra.BashCompOneRequiredFlag]; len(req) == 1 && req[0] == "true" && !f.Changed {
			missing = append(missing, "--"+f.Name)
		}
	})
	if len(missing) == 0 {
		return nil
	}
	return usagef("missing %s; run \"%s -h\"", strings.Join(missing, ", "), cmd.CommandPath())
}

func markRequired(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic(err) // a flag name typo in this package
		}
	}
}

// deprecatedAnnotation marks a flag kept under an old name: hidden from
// help and suggestions, and noted on stderr when used. (pflag's own
// MarkDeprecated note goes where cobra prints help: stdout.)
const deprecatedAnnotation = "eventsync_deprecated"

// deprecate hides the flag old of fs, to be replaced by --use.
func deprecate(fs *pflag.FlagSet, old, use string) {
	f := fs.Lookup(old)
	f.Hidden = true
	f.Annotations = map[string][]string{deprecatedAnnotation: {use}}
}

// noteDeprecated tells on w which deprecated flags cmd was given.
func noteDeprecated(w io.Writer, cmd *cobra.Command) {
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if use := f.Annotations[deprecatedAnnotation]; len(use) == 1 {
			fmt.Fprintf(w, "%s: --%s is deprecated; use --%s\n", cmd.CommandPath(), f.Name, use[0])
		}
	})
}

// flagAliases maps names users try to the flag a command calls it; a
// suggestion is made only if the command has that flag.
var flagAliases = map[string]string{
	"metrics-addr": "admin",
	"metrics":      "admin",
	"listen":       "admin",
	"config-file":  "config",
	"dsn":          "source",
	"database":     "source",
	"db":           "source",
	"broker":       "bus",
	"state-store":  "store",
	"ns":           "namespace",
}

// flagError adds a "did you mean" to pflag's parse errors: for an unknown
// flag the command's closest flag (a known alias first), for a Go-style
// single-dash long flag the same flag with two dashes.
func flagError(cmd *cobra.Command, err error) error {
	var notExist *pflag.NotExistError
	if !errors.As(err, &notExist) {
		return usage(err)
	}
	fs := cmd.Flags()
	if group := notExist.GetSpecifiedShortnames(); group != "" {
		if f := fs.Lookup(group); f != nil && !f.Hidden {
			return usagef("%v; did you mean --%s?", err, group)
		}
		return usage(err)
	}
	if s := closestFlag(fs, notExist.GetSpecifiedName()); s != "" {
		return usagef("%v; did you mean --%s?", err, s)
	}
	return usagef("%v; run \"%s -h\" for the flags", err, cmd.CommandPath())
}

// closestFlag returns the visible flag of fs nearest to name: an alias,
// else the smallest edit distance up to 2 (or a prefix of 3+ letters).
func closestFlag(fs *pflag.FlagSet, name string) string {
	visible := func(n string) bool {
		f := fs.Lookup(n)
		return f != nil && !f.Hidden
	}
	if alias, ok := flagAliases[name]; ok && visible(alias) {
		return alias
	}
	best, bestDist := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if !visible(f.Name) {
			return
		}
		d := setting.Distance(name, f.Name)
		if len(name) >= 3 && strings.HasPrefix(f.Name, name) && d > 1 {
			d = 1 // --conc → --concurrency
		}
		if d < bestDist || (d == bestDist && f.Name < best) {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// unknownCommand is the error for a mistyped command under cmd.
func unknownCommand(cmd *cobra.Command, name string) error {
	msg := fmt.Sprintf("unknown command %q for %q", name, cmd.CommandPath())
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		return usagef("%s; did you mean %s?", msg, strings.Join(s, " or "))
	}
	return usagef("%s; run \"%s -h\" for the commands", msg, cmd.CommandPath())
}

// exitCodesHelp documents the exit codes in "eventsync help".
const exitCodesHelp = `Exit status:
  0  success
  1  failure: the command ran and did not succeed (verify: diverged)
  2  usage error: bad flag, argument or configuration (verify: could not check)`

// writeUsage prints a command's usage: synopsis, commands, its own flags,
// then the shared connection flags, and the exit codes at the root.
func writeUsage(c *cobra.Command) error {
	w := c.OutOrStderr()
	fmt.Fprint(w, "Usage:\n")
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "  %s <command> [flags]\n", c.CommandPath())
	} else {
		fmt.Fprintf(w, "  %s\n", c.UseLine())
	}
	if len(c.Aliases) > 0 {
		fmt.Fprintf(w, "\nAliases:\n  %s\n", c.NameAndAliases())
	}
	if c.HasExample() {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(c.Example, "\n"))
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprint(w, "\nCommands:\n")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(w, "  %-*s %s\n", c.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	own, conn := pflag.NewFlagSet("own", pflag.ContinueOnError), pflag.NewFlagSet("conn", pflag.ContinueOnError)
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if req := f.Annotations[cobra.BashCompOneRequiredFlag]; len(req) == 1 && req[0] == "true" {
			shown := *f // a copy: the flag itself keeps its usage
			shown.Usage += " (required)"
			f = &shown
		}
		if _, ok := f.Annotations[connAnnotation]; ok {
			conn.AddFlag(f)
		} else {
			own.AddFlag(f)
		}
	})
	printFlags(w, "Flags", own)
	printFlags(w, "Connection flags (override the config file and the environment)", conn)
	if !c.HasParent() {
		fmt.Fprintf(w, "\n%s\n", exitCodesHelp)
	}
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(w, "\nRun \"%s <command> -h\" for a command's flags.\n", c.CommandPath())
	}
	return nil
}

func printFlags(w io.Writer, title string, fs *pflag.FlagSet) {
	if !fs.HasAvailableFlags() {
		return
	}
	fmt.Fprintf(w, "\n%s:\n%s", title, fs.FlagUsages())
}

// completeWords is a flag completion offering fixed values.
func completeWords(words ...string) cobra.CompletionFunc {
	sort.Strings(words)
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	}
}
