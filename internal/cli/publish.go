package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
)

// publishBatch is how many events go to the broker per confirmed batch.
const publishBatch = 500

func newPublishCmd(env Env) *cobra.Command {
	var (
		conn       connFlags
		streamName string
		maxBytes   int
	)
	cmd := &cobra.Command{
		Use:   "publish --stream live|resync [FILE]",
		Short: "publish newline-delimited events from a file or stdin, with confirms",
		Long: `Publish newline-delimited JSON events (docs/events.md) from FILE, or from
stdin when FILE is absent or "-", in confirmed batches. A bad line stops the
run after the lines before it were published.`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runPublish(cmd.Context(), env, &conn, streamName, maxBytes, args)
		},
	}
	fs := cmd.Flags()
	conn.register(fs, flagConfig, flagBus, flagNamespace, flagDataDir, flagLogLevel)
	fs.StringVar(&streamName, "stream", "live", "stream to publish to: live or resync")
	fs.IntVar(&maxBytes, "max-event-bytes", event.DefaultMaxSize, "reject events larger than this")
	return cmd
}

func runPublish(ctx context.Context, env Env, conn *connFlags, streamName string, maxBytes int, args []string) error {
	stream, err := bus.ParseStream(streamName)
	if err != nil {
		return usagef("--stream: %w", err)
	}
	in := env.Stdin
	name := "stdin"
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("open events file: %w", err)
		}
		defer f.Close()
		in, name = f, args[0]
	}
	cfg, err := conn.load(env)
	if err != nil {
		return err
	}
	log := newLogger(env.Stderr, cfg.Log)
	res, err := openResources(ctx, cfg, log, needBus)
	if err != nil {
		return err
	}
	defer res.Close()
	n, err := publishNDJSON(ctx, res.Bus, stream, in, maxBytes)
	fmt.Fprintf(env.Stdout, "published %d events from %s to %s\n", n, name, stream)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// publishNDJSON validates every line before publishing it; events are
// published in confirmed batches, and a bad line stops the run after the
// lines before it were published, so nothing after it goes out silently.
func publishNDJSON(ctx context.Context, pub bus.Publisher, stream bus.Stream, in io.Reader, maxBytes int) (int, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), maxBytes+1)
	var batch []bus.Message
	published := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := pub.Publish(ctx, stream, batch...); err != nil {
			return fmt.Errorf("publish to %s (after %d confirmed events): %w", stream, published, err)
		}
		published += len(batch)
		batch = batch[:0]
		return nil
	}
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		if _, err := event.Parse(raw, maxBytes); err != nil {
			if ferr := flush(); ferr != nil {
				return published, ferr
			}
			return published, fmt.Errorf("line %d: %w; nothing from this line on was published", line, err)
		}
		batch = append(batch, bus.Message{Body: append([]byte(nil), raw...)})
		if len(batch) == publishBatch {
			if err := flush(); err != nil {
				return published, err
			}
		}
	}
	if err := sc.Err(); err != nil {
		if ferr := flush(); ferr != nil {
			return published, ferr
		}
		if errors.Is(err, bufio.ErrTooLong) {
			return published, fmt.Errorf("line %d: longer than --max-event-bytes %d; nothing from this line on was published", line+1, maxBytes)
		}
		return published, fmt.Errorf("read line %d: %w", line+1, err)
	}
	return published, flush()
}
