// Command baselines is what the worker benchmark of issue 14
// (test/bench/worker_test.go, docs/benchmarks.md) compares eventsync
// with: the least a consumer of the same queue can do, each run as its own
// process like `eventsync worker`.
//
//	baselines ack       -amqp URL -queue Q -n N -prefetch P
//	baselines post      -amqp URL -queue Q -n N -concurrency C -api URL
//	baselines watermill -amqp URL -queue Q -n N -concurrency C -api URL
//
// ack consumes and acks (amqp091-go, no work at all); post consumes, POSTs
// each event to the API and acks (amqp091-go and net/http, no state);
// watermill does the same as post through a Watermill router with the
// watermill-amqp subscriber, as a team would hand-roll it. Each prints
// "done" on stdout when the n-th event is acked, then closes its
// connections and exits 0; any failure exits non-zero.
//
// It is its own Go module so that Watermill never becomes a dependency of
// eventsync.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// options are the flags every mode shares.
type options struct {
	amqpURL     string
	queue       string
	n           int64
	prefetch    int
	concurrency int
	api         string // the collection's URL, e.g. http://127.0.0.1:8081/v1/listings
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: baselines ack|post|watermill [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var o options
	fs.StringVar(&o.amqpURL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ URL")
	fs.StringVar(&o.queue, "queue", "", "queue to drain (it must exist)")
	fs.Int64Var(&o.n, "n", 0, "events to process before exiting")
	fs.IntVar(&o.prefetch, "prefetch", 0, "unacked deliveries per channel (default: concurrency for ack and post, 1 for watermill, its library default)")
	fs.IntVar(&o.concurrency, "concurrency", 256, "events in flight (goroutines for post, router handlers for watermill)")
	fs.StringVar(&o.api, "api", "", "collection URL events are POSTed to")
	_ = fs.Parse(os.Args[2:])
	if o.queue == "" || o.n < 1 || o.concurrency < 1 || (mode != "ack" && o.api == "") {
		fmt.Fprintln(os.Stderr, "baselines: -queue, a positive -n and -concurrency are required, and -api for post and watermill")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch mode {
	case "ack":
		err = rawAck(ctx, o)
	case "post":
		err = rawPost(ctx, o)
	case "watermill":
		err = watermillPost(ctx, o)
	default:
		err = fmt.Errorf("unknown mode %q: want ack, post or watermill", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "baselines "+mode+":", err)
		os.Exit(1)
	}
}

// reportDone tells the harness the n-th event is settled. The harness times
// the run up to the moment it reads this line.
func reportDone() { fmt.Println("done") }
