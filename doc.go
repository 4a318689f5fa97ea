// Package eventsync keeps a third-party API in sync with an application's
// data through a message bus, and stays correct when everything around it
// fails: duplicated, reordered and stale events, crashed and racing
// workers, an API that rate-limits, times out after writing or goes down
// for hours. It is the library behind the eventsync binary; a Go program
// embeds it to run workers with its own sink (an SDK, OAuth, a multi-step
// create, request signing), or a relay or resync next to its own code.
//
// A Client is one deployment: a Config (the binary's YAML file, or the
// same values set in Go) and the connections to its bus, state store and
// source, opened on first use and chosen by URL scheme (see Schemes).
// From it come the long-running parts, each with Run(ctx):
//
//   - NewWorker: applies events to the API through the sink, behind the
//     throttle that shares one API budget across the fleet;
//   - NewRelay: publishes the application's outbox to the live stream;
//   - NewResync: publishes a consistent snapshot of a table to the resync
//     stream, resumable from its checkpoint.
//
// A minimal worker with a Go sink:
//
//	client, err := eventsync.Open(eventsync.Config{
//		Bus:   "amqp://guest:guest@127.0.0.1:5672/",
//		Store: "redis://127.0.0.1:6379/0",
//	}, eventsync.WithSink(mySink), eventsync.WithLogger(logger))
//	if err != nil { ... }
//	defer client.Close()
//	worker, err := client.NewWorker(ctx)
//	if err != nil { ... }
//	return worker.Run(ctx) // until ctx ends; in-flight events finish or are released
//
// A sink implements sink.Sink; sink/sinktest is the conformance suite it
// should pass. The design and every guarantee are in docs/ARCHITECTURE.md.
package eventsync
