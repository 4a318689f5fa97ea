package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/internal/console"
	"github.com/eventsync/eventsync/internal/ops"
)

// consoleTokenEnv holds the console's token when no token file is given.
const consoleTokenEnv = "EVENTSYNC_CONSOLE_TOKEN"

type consoleFlags struct {
	listen, tokenFile string
}

func newConsoleCmd(env Env) *cobra.Command {
	conn := &connFlags{}
	fl := &consoleFlags{}
	cmd := &cobra.Command{
		Use:   "console",
		Short: "serve the web console and the HTTP control API",
		Long: `Serve the web console (overview, parked events, pause and resume, resync
runs, the last verify reports) and the JSON control API under /api/v1/
(docs/api.md), over the same bus and state store as the workers. Its flags
and EVENTSYNC_CONSOLE_TOKEN are in docs/configuration.md.

It listens on 127.0.0.1 unless --listen says otherwise. Changes (replay,
edit, purge, pause, resume) need the token, from --token-file or
EVENTSYNC_CONSOLE_TOKEN: as "Authorization: Bearer <token>" from scripts, or
by signing in from the browser. Without a token the console is read-only.
Listening on any other address needs a token, and then every request does.
Prints its URL on stdout; stops on SIGINT or SIGTERM.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runConsole(cmd.Context(), env, conn, fl) },
	}
	conn.register(cmd.Flags(), flagConfig, flagBus, flagStore, flagNamespace, flagDataDir, flagLogLevel)
	cmd.Flags().StringVar(&fl.listen, "listen", console.DefaultAddr, "address to listen on; 127.0.0.1:0 picks a free port (the URL is printed on stdout)")
	cmd.Flags().StringVar(&fl.tokenFile, "token-file", "", "`FILE` holding the token that authorises changes (default: env "+consoleTokenEnv+")")
	_ = cobra.MarkFlagFilename(cmd.Flags(), "token-file")
	return cmd
}

// consoleToken reads the token from the file, else the environment.
func consoleToken(file string) (string, error) {
	if file == "" {
		return strings.TrimSpace(lookupEnv(consoleTokenEnv)), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", usagef("--token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usagef("--token-file %s is empty", file)
	}
	return tok, nil
}

func runConsole(ctx context.Context, env Env, conn *connFlags, fl *consoleFlags) error {
	tok, err := consoleToken(fl.tokenFile)
	if err != nil {
		return err
	}
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)
	o := &ops.Ops{MaxEventBytes: cfg.Worker.WithDefaults().MaxEventBytes}
	if cfg.HasSink() {
		o.Entities = cfg.Sink.Entities()
	}
	srv, err := console.New(console.Config{Addr: fl.listen, Token: tok, Ops: o, Deployment: cfg.Namespace, Logger: log})
	if err != nil {
		return usage(err)
	}
	res, err := openResources(ctx, cfg, log, needBus|needStore)
	if err != nil {
		return err
	}
	defer res.Close()
	o.Bus, o.Control = res.Bus, res.Store
	err = srv.Run(ctx, func(url string) { fmt.Fprintln(env.Stdout, url) })
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
