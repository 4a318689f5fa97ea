package sim

import (
	"context"
	"errors"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/engine"
)

// Settle carries out a delivery's outcome as engine.Worker.handle does:
// applied, duplicate, stale, superseded and repaired are acked; retried
// and locked are retried after out.Delay; parked is parked with its
// reason; anything else is handed back. A settle call that fails hands the
// delivery back, so the broker redelivers it and versions absorb the
// repeat. Keep it in step with handle (the worker's own copy is not
// exported).
func Settle(ctx context.Context, d bus.Delivery, out engine.Outcome) error {
	var err error
	switch out.Result {
	case engine.ResultApplied, engine.ResultDuplicate, engine.ResultStale, engine.ResultSuperseded, engine.ResultRepaired:
		err = d.Ack(ctx)
	case engine.ResultRetried, engine.ResultLocked:
		err = d.Retry(ctx, out.Delay, out.Reason)
	case engine.ResultParked:
		err = d.Park(ctx, out.Reason)
	default:
		err = d.Release(context.WithoutCancel(ctx))
	}
	if err != nil {
		if rerr := d.Release(context.WithoutCancel(ctx)); rerr != nil && !errors.Is(rerr, bus.ErrSettled) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// acked reports whether Settle acks a delivery with result r.
func acked(r engine.Result) bool {
	switch r {
	case engine.ResultApplied, engine.ResultDuplicate, engine.ResultStale, engine.ResultSuperseded, engine.ResultRepaired:
		return true
	}
	return false
}
