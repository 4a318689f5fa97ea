package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// Result names what happened to one delivery; it is the metrics label.
type Result string

const (
	ResultApplied   Result = "applied"   // the sink was called and the state committed
	ResultDuplicate Result = "duplicate" // version equal to the applied one
	ResultStale     Result = "stale"     // version below the applied one
	ResultRepaired  Result = "repaired"  // a stale event triggered a repair of the newest state
	ResultRetried   Result = "retried"   // scheduled for a delayed retry
	ResultLocked    Result = "locked"    // entity leased elsewhere, retried later
	ResultParked    Result = "parked"    // moved to the parked queue with a reason
	ResultReleased  Result = "released"  // handed back on shutdown
)

// Outcome is the fate of one delivery, decided by Applier.Apply and carried
// out by the worker. Making it a value keeps the algorithm testable without
// a bus.
type Outcome struct {
	Result Result
	// Delay before redelivery, for ResultRetried and ResultLocked.
	Delay time.Duration
	// Reason for a retry or park, human-readable.
	Reason string
	// Err is the failure behind a retry or park, if any.
	Err error
	// SinkFailure marks retryable failures of the API itself (not lock
	// contention), which feed the circuit breaker.
	SinkFailure bool
	// OccurredAt is the event's occurred_at (zero when it has none), for
	// the end-to-end lag metric.
	OccurredAt time.Time
	// Key is the event's entity and key (zero when the body did not parse).
	Key store.Key
}

// Applier runs the apply algorithm of DESIGN.md §4 for one event.
type Applier struct {
	store    store.Store
	sink     sink.Sink
	cfg      Config
	entities map[string]bool
	seq      atomic.Uint64
}

// NewApplier validates cfg and returns an Applier.
func NewApplier(st store.Store, sk sink.Sink, cfg Config) (*Applier, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil || sk == nil {
		return nil, errors.New("engine: store and sink are required")
	}
	a := &Applier{store: st, sink: sk, cfg: cfg}
	if len(cfg.Entities) > 0 {
		a.entities = make(map[string]bool, len(cfg.Entities))
		for _, e := range cfg.Entities {
			a.entities[e] = true
		}
	}
	return a, nil
}

// owner returns a lease owner unique to this attempt, so two goroutines of
// one process never share a lease (re-acquiring one's own lease is allowed
// by the store and would let them overlap).
func (a *Applier) owner() string {
	return fmt.Sprintf("%s/%d", a.cfg.WorkerID, a.seq.Add(1))
}

// Apply decides and performs everything for one encoded event except
// settling the delivery. attempt is the bus's delivery attempt (1-based).
func (a *Applier) Apply(ctx context.Context, body []byte, attempt int) Outcome {
	ev, err := event.Parse(body, a.cfg.MaxEventBytes)
	if err != nil {
		return Outcome{Result: ResultParked, Reason: err.Error(), Err: err}
	}
	out := a.apply(ctx, ev, body, attempt)
	out.Key = store.Key{Entity: ev.Entity, Key: ev.Key}
	if ev.OccurredAt != nil {
		out.OccurredAt = *ev.OccurredAt
	}
	return out
}

func (a *Applier) apply(ctx context.Context, ev event.Event, body []byte, attempt int) Outcome {
	if a.entities != nil && !a.entities[ev.Entity] {
		return Outcome{Result: ResultParked, Reason: fmt.Sprintf("unknown entity type %q: the sink configures %s", ev.Entity, strings.Join(a.cfg.Entities, ", "))}
	}
	key := store.Key{Entity: ev.Entity, Key: ev.Key}
	lease, state, err := a.store.Acquire(ctx, key, a.owner(), a.cfg.LeaseTTL)
	if err != nil {
		var locked *store.LockedError
		if errors.As(err, &locked) {
			delay := a.cfg.LockedRetryDelay
			if locked.RetryAfter > 0 && locked.RetryAfter < delay {
				delay = locked.RetryAfter
			}
			return Outcome{Result: ResultLocked, Delay: jitter(delay), Reason: "entity leased by another worker"}
		}
		return a.storeFailure(attempt, fmt.Errorf("acquire lease on %s: %w", key, err))
	}

	if ev.Version <= state.AppliedVersion {
		result := ResultDuplicate
		if ev.Version < state.AppliedVersion {
			result = ResultStale
		}
		if !state.RepairNeeded {
			a.release(ctx, lease)
			return Outcome{Result: result}
		}
	}
	// The API calls may wait long (the throttle's budget, a slow API):
	// the lease is renewed meanwhile, so it does not expire under a call
	// that has not even gone out, and held ends if it is lost anyway.
	held, stop := a.keepLease(ctx, lease)
	defer stop()
	if ev.Version <= state.AppliedVersion {
		// A zombie write may have left older data remotely: re-apply the
		// newest state we know, then commit it again to clear the flag.
		return a.repair(ctx, held, lease, state, attempt)
	}
	return a.write(ctx, held, lease, state, ev, body, attempt)
}

// write calls the sink for ev (under held, which ends when the lease is
// lost) and commits; lease is released on every path.
func (a *Applier) write(ctx, held context.Context, lease store.Lease, state store.State, ev event.Event, body []byte, attempt int) Outcome {
	rec := sink.Record{Entity: ev.Entity, Key: ev.Key, Version: ev.Version, Data: ev.Data}
	var remoteID string
	var err error
	if ev.Op == event.OpDelete {
		err = a.deleteRemote(held, lease, state, ev.Version)
	} else {
		remoteID, err = a.upsertRemote(held, lease, state, rec)
	}
	if err != nil {
		// Judge the failure before the release, which a renewal would
		// then take for a lost lease.
		out := a.callFailure(ctx, held, lease, attempt, err)
		a.release(ctx, lease)
		return out
	}
	commit := store.Commit{Version: ev.Version, RemoteID: remoteID, Deleted: ev.Op == event.OpDelete, Event: body}
	return a.commit(ctx, lease, commit)
}

func (a *Applier) commit(ctx context.Context, lease store.Lease, c store.Commit) Outcome {
	err := a.store.Commit(ctx, lease, c)
	switch {
	case err == nil:
		return Outcome{Result: ResultApplied}
	case errors.Is(err, store.ErrFenced):
		// Our lease expired during the call and another worker took the
		// key: our write may have overwritten newer data. Flag the key so
		// the next holder re-applies the newest state, and come back.
		if merr := a.store.MarkRepair(ctx, lease.Key); merr != nil {
			return a.storeFailure(1, fmt.Errorf("lease lost on %s and marking it for repair failed: %w", lease.Key, merr))
		}
		return Outcome{Result: ResultRetried, Delay: jitter(a.cfg.LockedRetryDelay), Reason: "lease lost during the sink call; repair scheduled", Err: err}
	case errors.Is(err, store.ErrStaleCommit):
		return Outcome{Result: ResultStale}
	default:
		// The sink call succeeded but we do not know whether the commit
		// did: retrying is safe because the intent (for creates) and the
		// version check make the next attempt converge.
		return a.storeFailure(1, fmt.Errorf("commit %s: %w", lease.Key, err))
	}
}

// upsertRemote makes the remote record equal rec and returns its remote id.
func (a *Applier) upsertRemote(ctx context.Context, lease store.Lease, state store.State, rec sink.Record) (string, error) {
	if state.RepairNeeded {
		// A zombie's create may have left a second record: look up, keep
		// the one we know, remove the others, write the newer state.
		return a.createOrAdopt(ctx, lease, rec, true, state.RemoteID)
	}
	if state.RemoteID != "" && !state.Deleted {
		err := a.sink.Update(ctx, state.RemoteID, rec)
		if err == nil {
			return state.RemoteID, nil
		}
		if !errors.Is(err, sink.ErrNotFound) {
			return "", err
		}
		// Removed on the remote side: re-create, but look up first in case
		// it was re-created under another id.
		return a.createOrAdopt(ctx, lease, rec, true, "")
	}
	// A pending intent means an earlier attempt may have created the
	// record before crashing or timing out: reconcile before creating.
	reconcile := state.Intent != nil && state.Intent.Action == store.ActionCreate
	return a.createOrAdopt(ctx, lease, rec, reconcile || a.cfg.LookupBeforeCreate, "")
}

// createOrAdopt finds an existing remote record by external id (when lookup
// is set), adopting it and removing duplicates, or creates one after
// recording a create intent.
func (a *Applier) createOrAdopt(ctx context.Context, lease store.Lease, rec sink.Record, lookup bool, prefer string) (string, error) {
	if lookup {
		ids, err := a.sink.Lookup(ctx, rec.Entity, rec.Key)
		if err != nil {
			return "", err
		}
		if len(ids) > 0 {
			keep := pick(ids, prefer)
			if err := a.removeExtras(ctx, rec.Entity, ids, keep); err != nil {
				return "", err
			}
			if err := a.sink.Update(ctx, keep, rec); err != nil {
				return "", err
			}
			return keep, nil
		}
	}
	intent := store.Intent{Version: rec.Version, Action: store.ActionCreate, Token: lease.Token, At: a.cfg.Now()}
	if err := a.store.SaveIntent(ctx, lease, intent); err != nil {
		return "", fmt.Errorf("record create intent for %s: %w", lease.Key, err)
	}
	return a.sink.Create(ctx, rec)
}

// deleteRemote removes the remote record (and any duplicates found while
// reconciling). A record already gone is success.
func (a *Applier) deleteRemote(ctx context.Context, lease store.Lease, state store.State, version int64) error {
	// A zombie's create, like a pending one, may have left records we
	// know no id of.
	pendingCreate := (state.Intent != nil && state.Intent.Action == store.ActionCreate) || state.RepairNeeded
	if state.RemoteID != "" && !state.Deleted {
		if err := a.sink.Delete(ctx, lease.Key.Entity, state.RemoteID); err != nil && !errors.Is(err, sink.ErrNotFound) {
			return err
		}
		if !pendingCreate {
			return nil
		}
	}
	// A key the store has never seen may still exist remotely (created
	// before eventsync, or found by verify as extra): look it up. A key we
	// applied without a remote id and without a pending create has nothing
	// remote to delete.
	if !pendingCreate && state.AppliedVersion > 0 {
		return nil
	}
	ids, err := a.sink.Lookup(ctx, lease.Key.Entity, lease.Key.Key)
	if err != nil {
		return err
	}
	return a.removeExtras(ctx, lease.Key.Entity, ids, "")
}

// removeExtras deletes every id except keep.
func (a *Applier) removeExtras(ctx context.Context, entity string, ids []string, keep string) error {
	for _, id := range ids {
		if id == keep {
			continue
		}
		if err := a.sink.Delete(ctx, entity, id); err != nil && !errors.Is(err, sink.ErrNotFound) {
			return err
		}
	}
	return nil
}

// repair re-applies the newest applied state (state.LastEvent) after a
// zombie write, then commits the same version to clear the flag.
func (a *Applier) repair(ctx, held context.Context, lease store.Lease, state store.State, attempt int) Outcome {
	last, err := event.Parse(state.LastEvent, 0)
	if err != nil {
		// Cannot happen for events we committed ourselves; do not loop.
		a.release(ctx, lease)
		return Outcome{Result: ResultParked, Reason: "repair impossible: stored last event unreadable: " + err.Error(), Err: err}
	}
	var remoteID string
	if last.Op == event.OpDelete {
		ids, lerr := a.sink.Lookup(held, last.Entity, last.Key)
		if lerr == nil {
			lerr = a.removeExtras(held, last.Entity, ids, "")
		}
		err = lerr
	} else {
		rec := sink.Record{Entity: last.Entity, Key: last.Key, Version: last.Version, Data: last.Data}
		// Always look up: the zombie may have been a create.
		remoteID, err = a.createOrAdopt(held, lease, rec, true, state.RemoteID)
	}
	if err != nil {
		// Judge the failure before the release, which a renewal would
		// then take for a lost lease.
		out := a.callFailure(ctx, held, lease, attempt, err)
		a.release(ctx, lease)
		return out
	}
	out := a.commit(ctx, lease, store.Commit{Version: last.Version, RemoteID: remoteID, Deleted: last.Op == event.OpDelete, Event: state.LastEvent})
	if out.Result == ResultApplied {
		out.Result = ResultRepaired
	}
	return out
}

func (a *Applier) release(ctx context.Context, lease store.Lease) {
	if err := a.store.Release(ctx, lease); err != nil {
		// The lease expires on its own; other workers wait at most its TTL.
		a.cfg.Logger.Warn("release lease failed; it will expire", "key", lease.Key.String(), "err", err)
	}
}

// errLeaseLost ends a call's context when its lease could not be renewed.
var errLeaseLost = errors.New("engine: lease lost")

// keepLease renews lease every third of its TTL until stop is called. The
// returned context ends (cause errLeaseLost) when a renewal finds the lease
// taken: the calls under it stop, and callFailure schedules a repair. A
// timer rather than a goroutine per event: most events finish long before
// the first renewal.
func (a *Applier) keepLease(ctx context.Context, lease store.Lease) (held context.Context, stop func()) {
	held, cancel := context.WithCancelCause(ctx)
	var (
		mu      sync.Mutex
		stopped bool
		running sync.WaitGroup
		timer   *time.Timer
	)
	every := a.cfg.LeaseTTL / 3
	mu.Lock() // the callback reads timer
	defer mu.Unlock()
	timer = time.AfterFunc(every, func() {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		running.Add(1)
		mu.Unlock()
		defer running.Done()
		_, err := a.store.Extend(held, lease, a.cfg.LeaseTTL)
		if errors.Is(err, store.ErrFenced) {
			cancel(errLeaseLost)
			return
		}
		// Another error (the store is unreachable): try again at the next
		// tick; the lease may expire meanwhile, and fencing still holds.
		mu.Lock()
		if !stopped {
			timer.Reset(every)
		}
		mu.Unlock()
	})
	return held, func() {
		mu.Lock()
		stopped = true
		timer.Stop()
		mu.Unlock()
		running.Wait()
		cancel(nil)
	}
}

// callFailure handles a failed sink call. When the lease was lost under
// it, the call may still have reached the API after another worker's
// write: the key is flagged for repair and the event retried, as after a
// fenced commit.
func (a *Applier) callFailure(ctx, held context.Context, lease store.Lease, attempt int, err error) Outcome {
	if errors.Is(err, store.ErrFenced) {
		// The create intent found the lease taken: nothing was written,
		// and it says nothing about the API's health.
		return Outcome{Result: ResultRetried, Delay: jitter(a.cfg.LockedRetryDelay), Reason: "lease lost before the create; retrying", Err: err}
	}
	if !errors.Is(context.Cause(held), errLeaseLost) || ctx.Err() != nil {
		return a.sinkFailure(attempt, err)
	}
	if merr := a.store.MarkRepair(ctx, lease.Key); merr != nil {
		return a.storeFailure(1, fmt.Errorf("lease on %s lost during the sink call and marking it for repair failed: %w", lease.Key, merr))
	}
	return Outcome{Result: ResultRetried, Delay: jitter(a.cfg.LockedRetryDelay), Reason: "lease lost during the sink call; repair scheduled", Err: err}
}

// sinkFailure turns a sink error into a retry or a park.
func (a *Applier) sinkFailure(attempt int, err error) Outcome {
	retryable, after := sink.Retryable(err)
	if errors.Is(err, context.Canceled) {
		return Outcome{Result: ResultReleased, Err: err}
	}
	if !retryable {
		return Outcome{Result: ResultParked, Reason: err.Error(), Err: err}
	}
	return a.retry(attempt, after, err, true)
}

// storeFailure retries an event whose state store call failed. It never
// parks: the event is valid and the store will come back, so parking would
// turn a store outage into lost work; the event waits in the retry tiers.
func (a *Applier) storeFailure(attempt int, err error) Outcome {
	delay := Backoff(attempt, a.cfg.BackoffBase, a.cfg.BackoffMax)
	return Outcome{Result: ResultRetried, Delay: delay, Reason: err.Error(), Err: err}
}

func (a *Applier) retry(attempt int, after time.Duration, err error, sinkFailure bool) Outcome {
	if attempt >= a.cfg.MaxAttempts {
		return Outcome{Result: ResultParked, Reason: fmt.Sprintf("gave up after %d attempts: %v", attempt, err), Err: err}
	}
	delay := Backoff(attempt, a.cfg.BackoffBase, a.cfg.BackoffMax)
	if after > delay {
		delay = after
	}
	return Outcome{Result: ResultRetried, Delay: delay, Reason: err.Error(), Err: err, SinkFailure: sinkFailure}
}

// Backoff is exponential backoff with equal jitter: attempt 1 waits between
// base/2 and base, each further attempt doubles it, capped at max.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + rand.N(d/2+1)
}

// jitter spreads d by ±25% so retried events do not return in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*3/4 + rand.N(d/2+1)
}

func pick(ids []string, prefer string) string {
	for _, id := range ids {
		if id == prefer {
			return id
		}
	}
	return ids[0]
}
