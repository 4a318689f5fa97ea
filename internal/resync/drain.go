package resync

import (
	"context"
	"fmt"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/control"
)

// unsettledCounter is implemented by buses that can count every message of
// a stream not yet acknowledged (ready, in flight and delayed), such as the
// NATS JetStream adapter, whose Stats cannot tell delayed retries.
type unsettledCounter interface {
	Unsettled(ctx context.Context, stream bus.Stream) (int64, error)
}

// observation is one look at the resync stream and the workers applying it.
type observation struct {
	status    DrainStatus
	unsettled int64 // -1 when the bus cannot count it
	// beats are the resync workers' heartbeats: when each was written and
	// how many resync deliveries it had settled.
	beats map[string]beat
}

type beat struct {
	seen time.Time
	done int64
}

// idle reports whether nothing of the resync stream is waiting or being
// applied as far as this one observation can tell.
func (o observation) idle() bool {
	if o.status.InFlight != 0 {
		return false
	}
	if o.unsettled >= 0 {
		return o.unsettled == 0
	}
	return o.status.Ready == 0 && o.status.Delayed <= 0
}

// quietSince tells whether every worker seen now was seen in base, has
// written a newer heartbeat since (so its in-flight count is current), and
// settled nothing in between. fresh is false while some heartbeat is not
// yet renewed: wait, without starting over.
func (o observation) quietSince(base observation) (quiet, fresh bool) {
	if len(o.beats) != len(base.beats) {
		return false, true
	}
	fresh = true
	for id, b := range o.beats {
		old, ok := base.beats[id]
		if !ok || b.done != old.done {
			return false, true
		}
		if !b.seen.After(old.seen) {
			fresh = false
		}
	}
	return true, fresh
}

func (r *runner) observe(ctx context.Context) (observation, error) {
	st, err := r.stats.Stats(ctx, bus.Resync)
	if err != nil {
		return observation{}, fmt.Errorf("read resync stream statistics: %w", err)
	}
	o := observation{
		status:    DrainStatus{Ready: st.Ready, Delayed: st.Delayed, Consumers: st.Consumers},
		unsettled: -1,
		beats:     map[string]beat{},
	}
	if uc, ok := r.stats.(unsettledCounter); ok {
		if n, err := uc.Unsettled(ctx, bus.Resync); err == nil {
			o.unsettled = n
		}
	}
	workers, err := control.Workers(ctx, r.ctl)
	if err != nil {
		return observation{}, err
	}
	for _, w := range workers {
		inFlight, covers := w.InFlight[bus.Resync]
		if !covers {
			continue // this worker does not consume the resync stream
		}
		o.status.InFlight += inFlight
		o.status.Workers++
		o.beats[w.ID] = beat{seen: w.SeenAt, done: w.PerStream[bus.Resync]}
	}
	return o, nil
}

// waitDrained returns once the resync stream is applied, not merely
// published: the broker holds nothing ready or delayed, no worker has a
// resync event in flight, and that stays so between two observations at
// least drainStable apart in which every worker renewed its heartbeat
// without settling anything.
func (r *runner) waitDrained(ctx context.Context) (time.Duration, error) {
	begin := time.Now()
	var base *observation
	var baseAt time.Time
	var lastLog time.Time
	tick := time.NewTicker(r.drainPoll)
	defer tick.Stop()
	r.log.Info("waiting until workers have applied the resync stream", "run", r.spec.RunID)
	for {
		o, err := r.observe(ctx)
		if err != nil {
			return time.Since(begin), err
		}
		r.report(PhaseDrain, o.status)
		// Regular progress goes to the progress callback; warn when the
		// wait cannot end by itself.
		if o.status.Consumers == 0 && o.status.Workers == 0 && !o.idle() && time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			r.log.Warn("no worker consumes the resync stream; start workers whose streams include resync",
				"ready", o.status.Ready, "delayed", o.status.Delayed)
		}
		switch {
		case !o.idle():
			base = nil
		case base == nil:
			base, baseAt = &o, time.Now()
		case time.Since(baseAt) >= r.drainStable:
			quiet, fresh := o.quietSince(*base)
			if !quiet {
				base, baseAt = &o, time.Now()
			} else if fresh {
				waited := time.Since(begin)
				r.log.Info("resync stream drained", "waited", waited.Round(time.Millisecond))
				return waited, nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Since(begin), fmt.Errorf("waiting for the resync stream to drain: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
