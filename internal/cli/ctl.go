package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/ops"
)

func newCtlCmd(env Env) *cobra.Command {
	conn := &connFlags{}
	cmd := newGroup("ctl", "operate a running deployment: pause, resume, status, parked events",
		`Operate a running deployment through its bus and state store: pause and
resume a stream for every worker, show the streams and workers, and list,
show, replay or purge parked events.`)
	conn.register(cmd.PersistentFlags(), flagConfig, flagNamespace, flagDataDir, flagLogLevel)
	cmd.AddCommand(
		newCtlPauseCmd(env, conn, "pause", "stop every worker pulling a stream (within a second)"),
		newCtlPauseCmd(env, conn, "resume", "let workers pull a paused stream again"),
		newCtlStatusCmd(env, conn),
		newCtlParkedCmd(env, conn),
	)
	return cmd
}

func newCtlPauseCmd(env Env, conn *connFlags, verb, short string) *cobra.Command {
	var streamName, reason string
	cmd := &cobra.Command{
		Use:   verb + " --stream live|resync",
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ctlPause(cmd.Context(), env, conn, verb, streamName, reason)
		},
	}
	conn.register(cmd.Flags(), flagStore)
	cmd.Flags().StringVar(&streamName, "stream", "", "stream to "+verb+": live or resync")
	if verb == "pause" {
		cmd.Flags().StringVar(&reason, "reason", "", "why (shown by ctl status)")
	}
	markRequired(cmd, "stream")
	return cmd
}

func ctlPause(ctx context.Context, env Env, conn *connFlags, verb, streamName, reason string) error {
	stream, err := bus.ParseStream(streamName)
	if err != nil {
		return usagef("--stream: %w", err)
	}
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	res, err := openResources(ctx, cfg, newLogger(env.Stderr, cfg.Log), needStore)
	if err != nil {
		return err
	}
	defer res.Close()
	host, _ := os.Hostname()
	o := &ops.Ops{Control: res.Store}
	if _, err := o.SetPaused(ctx, stream, verb == "pause", "ctl@"+host, reason); err != nil {
		return err
	}
	if verb == "pause" {
		fmt.Fprintf(env.Stdout, "stream %s paused: workers stop pulling it within a second; its events wait in the queue\n", stream)
	} else {
		fmt.Fprintf(env.Stdout, "stream %s resumed\n", stream)
	}
	return nil
}

// StreamStatus is one line of `ctl status`.
type StreamStatus = ops.StreamStatus

// ClusterStatus is the whole `ctl status --json` document.
type ClusterStatus = ops.ClusterStatus

func newCtlStatusCmd(env Env, conn *connFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "per stream: paused, queue depth, consumers, in-flight, rates; the live workers",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return ctlStatus(cmd.Context(), env, conn, asJSON) },
	}
	conn.register(cmd.Flags(), flagBus, flagStore)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func ctlStatus(ctx context.Context, env Env, conn *connFlags, asJSON bool) error {
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	res, err := openResources(ctx, cfg, newLogger(env.Stderr, cfg.Log), needBus|needStore)
	if err != nil {
		return err
	}
	defer res.Close()
	st, err := (&ops.Ops{Bus: res.Bus, Control: res.Store}).Status(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(env.Stdout, st)
	return nil
}

func printStatus(w io.Writer, st ClusterStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSTATE\tREADY\tDELAYED\tUNACKED\tCONSUMERS\tIN-FLIGHT\tRATE/s")
	count := func(n int64) string {
		if n < 0 {
			return "?"
		}
		return fmt.Sprint(n)
	}
	var parked int64 = -1
	for _, s := range st.Streams {
		state := "running"
		if s.Paused {
			state = "paused by " + s.PausedBy
		}
		parked = s.Parked
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%.1f\n", s.Stream, state, s.Ready, count(s.Delayed), count(s.Unacked), s.Consumers, s.InFlight, s.Rate)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "parked: %s\n", count(parked))
	fmt.Fprintf(w, "\n%d worker(s)\n", len(st.Workers))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tBREAKER\tCONCURRENCY\tIN-FLIGHT\tAPPLIED\tSEEN")
	for _, wk := range st.Workers {
		var inflight int64
		for _, n := range wk.InFlight {
			inflight += n
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s ago\n", wk.ID, wk.Breaker, wk.Concurrency, inflight, wk.Results["applied"], time.Since(wk.SeenAt).Round(time.Second))
	}
	_ = tw.Flush()
}

// parkedFlags are the flags of the "ctl parked" commands; each command
// registers the ones it acts on.
type parkedFlags struct {
	entity, reason, since, until string
	limit                        int
	id                           string
	asJSON, yes                  bool
}

func newCtlParkedCmd(env Env, conn *connFlags) *cobra.Command {
	cmd := newGroup("parked", "list, show, replay or purge parked events",
		`Parked events are those the workers could not apply (invalid, rejected by the
API, or out of attempts), kept with their reason. Filters select them by
entity, reason and time; run "list" with the same filters before "replay"
or "purge".`)
	for _, c := range []struct {
		verb, use, short string
		filters          bool
	}{
		{"list", "list [filters]", "list parked messages", true},
		{"show", "show --id ID", "one parked message with its body", false},
		{"replay", "replay [filters]", "send matching messages back to their original stream", true},
		{"purge", "purge [filters] --yes", "delete matching parked messages for good", true},
	} {
		f := &parkedFlags{}
		sub := &cobra.Command{
			Use:   c.use,
			Short: c.short,
			Args:  noArgs,
			RunE:  func(cmd *cobra.Command, _ []string) error { return ctlParked(cmd.Context(), env, conn, c.verb, f) },
		}
		fs := sub.Flags()
		conn.register(fs, flagBus)
		if c.filters {
			fs.StringVar(&f.entity, "entity", "", "only events of this entity type")
			fs.StringVar(&f.reason, "reason", "", "only messages whose reason contains this text")
			fs.StringVar(&f.since, "since", "", "parked at or after: RFC 3339 time or a duration ago like 1h")
			fs.StringVar(&f.until, "until", "", "parked at or before: RFC 3339 time or a duration ago")
			fs.IntVar(&f.limit, "limit", 0, "at most this many (0: all)")
		}
		switch c.verb {
		case "show":
			fs.StringVar(&f.id, "id", "", "message id (see ctl parked list)")
			markRequired(sub, "id")
		case "purge":
			fs.BoolVar(&f.yes, "yes", false, "confirm: delete the matching messages")
		}
		if c.verb == "list" || c.verb == "show" {
			fs.BoolVar(&f.asJSON, "json", false, "print JSON")
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

func ctlParked(ctx context.Context, env Env, conn *connFlags, verb string, pf *parkedFlags) error {
	f, err := ops.ParseFilter(ops.FilterInput{Entity: pf.entity, Reason: pf.reason, Since: pf.since, Until: pf.until}, time.Now())
	if err != nil {
		return usagef("--%w", err)
	}
	f.Limit = pf.limit
	if verb == "purge" && !pf.yes {
		return usage(errors.New("ctl parked purge deletes messages for good: run ctl parked list with the same filters first, then add --yes"))
	}
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	res, err := openResources(ctx, cfg, newLogger(env.Stderr, cfg.Log), needBus)
	if err != nil {
		return err
	}
	defer res.Close()
	o := &ops.Ops{Bus: res.Bus}
	switch verb {
	case "replay":
		n, err := o.ReplayParked(ctx, f)
		fmt.Fprintf(env.Stdout, "replayed %d parked message(s) to their original stream\n", n)
		return err
	case "purge":
		n, err := o.PurgeParked(ctx, f)
		fmt.Fprintf(env.Stdout, "purged %d parked message(s)\n", n)
		return err
	}
	var msgs []bus.ParkedMessage
	if verb == "show" {
		m, err := o.ShowParked(ctx, pf.id)
		if errors.Is(err, bus.ErrNotParked) {
			return fmt.Errorf("no parked message with id %q (see ctl parked list)", pf.id)
		}
		if err != nil {
			return err
		}
		msgs = []bus.ParkedMessage{m}
	} else if msgs, err = o.ListParked(ctx, f); err != nil {
		return err
	}
	if pf.asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(msgs)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTREAM\tATTEMPTS\tPARKED AT\tREASON")
	for _, m := range msgs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", m.ID, m.Stream, m.Attempts, m.ParkedAt.Format(time.RFC3339), oneLine(m.Reason, 120))
	}
	_ = tw.Flush()
	if verb == "show" && len(msgs) == 1 {
		fmt.Fprintf(env.Stdout, "\nbody:\n%s\n", msgs[0].Body)
	} else {
		fmt.Fprintf(env.Stdout, "%d parked message(s)\n", len(msgs))
	}
	return nil
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
