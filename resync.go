package eventsync

import (
	"context"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/resync"
)

// ResyncSpec says which rows a resync publishes and what it does besides:
// table, entity and key column, an optional filter and column selection
// (use the trigger's, so resync and live events carry the same data), a
// run id naming its checkpoint, dry run, pausing live, deleting entities
// the table no longer has.
type ResyncSpec = resync.Spec

// ResyncResult is what one resync run did.
type ResyncResult = resync.Result

// ResyncProgress is reported after every confirmed page and while waiting
// for the resync stream to drain.
type ResyncProgress = resync.Progress

// ResyncOptions are a resync's optional callbacks and waits.
type ResyncOptions struct {
	// Progress, when set, is called from one goroutine at a time.
	Progress func(ResyncProgress)
	// DrainPoll is how often a run with PauseLive looks at the resync
	// stream; DrainStable how long it must stay drained (nothing
	// unacknowledged, every worker's heartbeat idle) before live resumes.
	// Defaults 1s and 3s.
	DrainPoll, DrainStable time.Duration
	// Owner names this process in checkpoints and the pause record.
	// Default host-pid.
	Owner string
}

// Resync publishes a consistent snapshot of a table to the resync stream,
// page by page with a checkpoint after each, so an interrupted run
// continues where it stopped. Its events carry the rows' versions, so old
// snapshot data never overwrites newer live data.
type Resync struct {
	c      *Client
	spec   ResyncSpec
	opts   ResyncOptions
	result ResyncResult
}

// NewResync prepares a run of spec; Run performs it.
func (c *Client) NewResync(spec ResyncSpec, opts ResyncOptions) (*Resync, error) {
	if err := spec.WithDefaults().Validate(); err != nil {
		return nil, err
	}
	return &Resync{c: c, spec: spec, opts: opts}, nil
}

// Run performs the run (or the rest of it, from its checkpoint) until it
// completes or ctx ends; Result then says how far it got.
func (r *Resync) Run(ctx context.Context) error {
	c := r.c
	c.mu.Lock()
	st, err := c.storeLocked(ctx)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	src, err := c.sourceLocked(ctx)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	opts := []resync.Option{resync.WithLogger(c.log), resync.WithStore(st), resync.WithTracerProvider(c.opts.tracer)}
	var pub bus.Publisher
	if !r.spec.DryRun {
		b, err := c.busLocked(ctx)
		if err != nil {
			c.mu.Unlock()
			return err
		}
		pub = b
		if r.spec.PauseLive {
			opts = append(opts, resync.WithDrain(b, r.opts.DrainPoll, r.opts.DrainStable))
		}
	}
	c.mu.Unlock()
	if r.opts.Progress != nil {
		opts = append(opts, resync.WithProgress(r.opts.Progress))
	}
	if r.opts.Owner != "" {
		opts = append(opts, resync.WithOwner(r.opts.Owner))
	}
	r.result, err = resync.Run(ctx, src, pub, st, r.spec, opts...)
	return err
}

// Result reports what the last Run did.
func (r *Resync) Result() ResyncResult { return r.result }
