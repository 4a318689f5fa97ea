package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/control"
)

const ctlUsage = `Usage: eventsync ctl <command> [flags]

Commands:
  pause  --stream live|resync [--reason TEXT]   stop every worker pulling a stream (within a second)
  resume --stream live|resync                   let workers pull it again
  status [--json]                               per stream: paused, queue depth, consumers, in-flight, rates
  parked list   [filters] [--json]              list parked messages
  parked show   --id ID                         one parked message with its body
  parked replay [filters]                       send matching messages back to their original stream
  parked purge  [filters] --yes                 delete matching parked messages

Filters: --entity E  --reason SUBSTRING  --since 2026-11-25T10:00:00Z|1h  --until …  --limit N
Every command takes --config, --bus, --store like the other subcommands.`

func runCtl(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(env.Stdout, ctlUsage)
		return nil
	}
	switch args[0] {
	case "pause", "resume":
		return ctlPause(ctx, env, args[0], args[1:])
	case "status":
		return ctlStatus(ctx, env, args[1:])
	case "parked":
		if len(args) < 2 {
			return errors.New("ctl parked needs a command: list, show, replay or purge")
		}
		return ctlParked(ctx, env, args[1], args[2:])
	}
	return fmt.Errorf("unknown ctl command %q\n\n%s", args[0], ctlUsage)
}

func ctlPause(ctx context.Context, env Env, verb string, args []string) error {
	fs := newFlagSet(env, "ctl "+verb, "--stream live|resync")
	conn := addConnFlags(fs, "store")
	streamName := fs.String("stream", "", "stream to "+verb+": live or resync (required)")
	reason := fs.String("reason", "", "why (shown by ctl status)")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	stream, err := bus.ParseStream(*streamName)
	if err != nil {
		return fmt.Errorf("--stream: %w", err)
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
	if err := control.SetPaused(ctx, res.Store, stream, verb == "pause", "ctl@"+host, *reason); err != nil {
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
type StreamStatus struct {
	Stream    bus.Stream `json:"stream"`
	Paused    bool       `json:"paused"`
	PausedBy  string     `json:"paused_by,omitempty"`
	Ready     int64      `json:"ready"`
	Delayed   int64      `json:"delayed"`
	Consumers int        `json:"consumers"`
	InFlight  int64      `json:"in_flight"`
	Rate      float64    `json:"rate_per_s"`
}

// ClusterStatus is the whole `ctl status --json` document.
type ClusterStatus struct {
	Streams []StreamStatus         `json:"streams"`
	Workers []control.WorkerStatus `json:"workers"`
}

func ctlStatus(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet(env, "ctl status", "[--json]")
	conn := addConnFlags(fs, "bus", "store")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	res, err := openResources(ctx, cfg, newLogger(env.Stderr, cfg.Log), needBus|needStore)
	if err != nil {
		return err
	}
	defer res.Close()
	st, err := collectStatus(ctx, res)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(env.Stdout, st)
	return nil
}

func collectStatus(ctx context.Context, res *resources) (ClusterStatus, error) {
	workers, err := control.Workers(ctx, res.Store)
	if err != nil {
		return ClusterStatus{}, err
	}
	var out ClusterStatus
	out.Workers = workers
	for _, s := range bus.Streams {
		ss := StreamStatus{Stream: s}
		p, err := control.Paused(ctx, res.Store, s)
		if err != nil {
			return out, err
		}
		if p != nil {
			ss.Paused, ss.PausedBy = true, p.By
		}
		stats, err := res.Bus.Stats(ctx, s)
		if err != nil {
			return out, fmt.Errorf("queue stats of %s: %w", s, err)
		}
		ss.Ready, ss.Delayed, ss.Consumers = stats.Ready, stats.Delayed, stats.Consumers
		for _, w := range workers {
			ss.InFlight += w.InFlight[s]
			ss.Rate += w.Rates[s]
		}
		out.Streams = append(out.Streams, ss)
	}
	return out, nil
}

func printStatus(w io.Writer, st ClusterStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSTATE\tREADY\tDELAYED\tCONSUMERS\tIN-FLIGHT\tRATE/s")
	for _, s := range st.Streams {
		state := "running"
		if s.Paused {
			state = "paused by " + s.PausedBy
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%.1f\n", s.Stream, state, s.Ready, s.Delayed, s.Consumers, s.InFlight, s.Rate)
	}
	_ = tw.Flush()
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

func ctlParked(ctx context.Context, env Env, verb string, args []string) error {
	fs := newFlagSet(env, "ctl parked "+verb, "[filters]")
	conn := addConnFlags(fs, "bus")
	entity := fs.String("entity", "", "only events of this entity type")
	reason := fs.String("reason", "", "only messages whose reason contains this text")
	since := fs.String("since", "", "parked at or after: RFC 3339 time or a duration ago like 1h")
	until := fs.String("until", "", "parked at or before: RFC 3339 time or a duration ago")
	limit := fs.Int("limit", 0, "at most this many (0: all)")
	id := fs.String("id", "", "message id (show)")
	asJSON := fs.Bool("json", false, "print JSON (list, show)")
	yes := fs.Bool("yes", false, "confirm purge")
	if err := parseFlags(fs, args, 0); err != nil {
		return err
	}
	f := bus.ParkedFilter{Entity: *entity, ReasonContains: *reason, Limit: *limit}
	var err error
	if f.Since, err = parseWhen(*since); err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	if f.Until, err = parseWhen(*until); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	switch verb {
	case "list", "show", "replay", "purge":
	default:
		return fmt.Errorf("unknown ctl parked command %q: use list, show, replay or purge", verb)
	}
	if verb == "show" && *id == "" {
		return errors.New("ctl parked show needs --id (see ctl parked list)")
	}
	if verb == "purge" && !*yes {
		return errors.New("ctl parked purge deletes messages for good: run ctl parked list with the same filters first, then add --yes")
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
	switch verb {
	case "replay":
		n, err := res.Bus.ReplayParked(ctx, f)
		fmt.Fprintf(env.Stdout, "replayed %d parked message(s) to their original stream\n", n)
		return err
	case "purge":
		n, err := res.Bus.PurgeParked(ctx, f)
		fmt.Fprintf(env.Stdout, "purged %d parked message(s)\n", n)
		return err
	}
	msgs, err := res.Bus.ListParked(ctx, f)
	if err != nil {
		return err
	}
	if verb == "show" {
		if msgs = selectID(msgs, *id); len(msgs) == 0 {
			return fmt.Errorf("no parked message with id %q (see ctl parked list)", *id)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(msgs)
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].ParkedAt.Before(msgs[j].ParkedAt) })
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

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 90m", s)
	}
	return t, nil
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func selectID(msgs []bus.ParkedMessage, id string) []bus.ParkedMessage {
	for _, m := range msgs {
		if m.ID == id {
			return []bus.ParkedMessage{m}
		}
	}
	return nil
}
