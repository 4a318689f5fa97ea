package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
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
	// ResultSuperseded: a newer write of the key is in doubt (its outcome
	// is unknown, its event will be retried); this older one must not pass
	// it.
	ResultSuperseded Result = "superseded"
	ResultRepaired   Result = "repaired" // a stale event triggered a repair of the newest state
	ResultRetried    Result = "retried"  // scheduled for a delayed retry
	ResultLocked     Result = "locked"   // entity leased by another process (or too many waiting here), retried later
	ResultParked     Result = "parked"   // moved to the parked queue with a reason
	ResultReleased   Result = "released" // handed back on shutdown
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
	// SinkFailure marks the API's own failures that say it may be down
	// (sink.Class.Outage: 5xx, timeouts, transport errors), which feed the
	// circuit breaker. Never set for waiting (a locked key, an unreachable
	// store or limiter) or for a 429, which holds instead.
	SinkFailure bool
	// RetryAfter is the delay the API asked for with its answer, 0 if none.
	RetryAfter time.Duration
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
	// strconv rather than fmt: this runs for every event that takes a lease.
	return a.cfg.WorkerID + "/" + strconv.FormatUint(a.seq.Add(1), 10)
}

// Apply decides and performs everything for one encoded event except
// settling the delivery. attempt is the bus's delivery attempt (1-based).
func (a *Applier) Apply(ctx context.Context, body []byte, attempt int) Outcome {
	ev, err := event.Parse(body, a.cfg.MaxEventBytes)
	if err != nil {
		return invalid(err)
	}
	return a.applyEvent(ctx, ev, body, attempt)
}

// invalid is the fate of a body that is no valid event.
func invalid(err error) Outcome {
	return Outcome{Result: ResultParked, Reason: err.Error(), Err: err}
}

// applyEvent is Apply for an event parsed from body already.
func (a *Applier) applyEvent(ctx context.Context, ev event.Event, body []byte, attempt int) Outcome {
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
	// Taking the lease records ev.Version as the write in doubt in the same
	// round trip; state is what stood before.
	lease, state, err := a.store.Acquire(ctx, key, a.owner(), a.cfg.LeaseTTL, ev.Version)
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

	// With nothing to write (the two cases below) the store took no lease
	// (store.NothingToWrite), and release does nothing.
	if store.Superseded(ev.Version, state) {
		// A newer write's outcome is unknown (it timed out, its worker
		// crashed, its commit failed): it may have landed, so this older
		// event must not overwrite it. That newer event is still in the
		// bus (or parked); its retry lands it and repairs what a zombie
		// left.
		a.release(ctx, lease)
		return Outcome{Result: ResultSuperseded}
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
	if !lease.Held() {
		// The store judged otherwise: never write without a lease.
		return a.storeFailure(attempt, fmt.Errorf("acquire lease on %s: the store took no lease for version %d, which has something to write (applied version %d, repair flagged %t)", key, ev.Version, state.AppliedVersion, state.RepairNeeded))
	}
	// The API calls may wait long (the throttle's budget, a slow API):
	// the lease is renewed meanwhile, so it does not expire under a call
	// that has not even gone out, and held ends if it is lost anyway.
	keeper := a.keepLease(ctx, lease)
	defer keeper.stop()
	held := keeper.held
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
	rec := sink.Record{Entity: ev.Entity, Key: ev.Key, Version: ev.Version, Data: ev.Data, EventID: ev.ID}
	var remoteID string
	var err error
	if ev.Op == event.OpDelete {
		err = a.deleteRemote(held, lease, state, ev.Version)
	} else {
		remoteID, err = a.upsertRemote(held, lease, state, rec)
	}
	if err != nil {
		return a.callFailure(ctx, held, lease, state, ev.Version, attempt, err)
	}
	commit := store.Commit{Version: ev.Version, RemoteID: remoteID, Deleted: ev.Op == event.OpDelete, Event: body}
	return a.commit(ctx, lease, commit)
}

func (a *Applier) commit(ctx context.Context, lease store.Lease, c store.Commit) Outcome {
	err := a.store.Commit(ctx, lease, c)
	switch {
	case err == nil:
		return Outcome{Result: ResultApplied}
	case errors.Is(err, store.ErrStaleCommit):
		// Fenced first: the lease was ours.
		return Outcome{Result: ResultStale}
	}
	// Fenced, or we do not know whether it took effect: ask the lease with
	// a Release, which a commit that did take effect makes a no-op.
	lost, serr := a.settle(ctx, lease, err, a.store.Release)
	switch {
	case serr != nil:
		return a.unsettled(lease, serr)
	case lost:
		// Our lease expired during the call and another worker took the
		// key: our write may have overwritten newer data. The key is
		// flagged, so its next holder re-applies the newest state; come
		// back.
		return Outcome{Result: ResultRetried, Delay: jitter(a.cfg.LockedRetryDelay), Reason: "lease lost during the sink call; repair scheduled", Err: err}
	}
	// The lease was ours and is given back; whether the commit took
	// effect is unknown: retrying is safe because the intent (for creates)
	// and the version check make the next attempt converge.
	return a.storeFailure(1, fmt.Errorf("commit %s: %w", lease.Key, err))
}

// settle finds out whether a lease that API calls went out under was lost,
// and if so flags its key for repair. err is the answer of the call that
// gave the lease back (Commit, Release, ReleaseFailed): nil proves the
// lease was ours until then, so every call under it landed before any
// later holder's; ErrFenced says another worker took the key over, so a
// call may have landed after that worker's write. Any other answer proves
// nothing, and again (an idempotent release) asks until the store
// answers. A lost lease flags the key until the flag is stored: no retry
// of this event could tell (it may find a newer version applied and be
// acked as stale), so only this attempt can. It waits between tries
// (waiting is not failing) and fails only when ctx ends first.
func (a *Applier) settle(ctx context.Context, lease store.Lease, err error, again func(context.Context, store.Lease) error) (lost bool, _ error) {
	for try := 1; err != nil && !errors.Is(err, store.ErrFenced); try++ {
		if serr := a.cfg.Sleep(ctx, a.waitDelay(try)); serr != nil {
			return false, fmt.Errorf("the store did not say whether the lease on %s was lost (%w): %w", lease.Key, err, serr)
		}
		err = again(ctx, lease)
	}
	if err == nil {
		return false, nil
	}
	return true, a.markRepair(ctx, lease.Key)
}

// markRepair flags k for repair, trying until the flag is stored or ctx
// ends.
func (a *Applier) markRepair(ctx context.Context, k store.Key) error {
	for try := 1; ; try++ {
		err := a.store.MarkRepair(ctx, k)
		if err == nil {
			return nil
		}
		if try == 1 {
			a.cfg.Logger.Warn("flagging a key for repair after its lease was lost failed; trying until it is stored", "key", k.String(), "err", err)
		}
		if serr := a.cfg.Sleep(ctx, a.waitDelay(try)); serr != nil {
			return fmt.Errorf("lease on %s lost and flagging it for repair failed (%w): %w", k, err, serr)
		}
	}
}

// unsettled hands a delivery back whose attempt was stopped (shutdown)
// before the store said whether its lease was lost, or took the key's
// repair flag. As after a crash at that point, a write that landed after
// another worker's stays until the key's next event or a verify repair.
func (a *Applier) unsettled(lease store.Lease, err error) Outcome {
	a.cfg.Logger.Warn("stopped before the lease of a sink call was settled; if it was lost, the remote record may hold stale data until the key's next event or a verify repair",
		"key", lease.Key.String(), "err", err)
	return Outcome{Result: ResultReleased, Reason: err.Error(), Err: err}
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
	// A write in doubt on a key without a remote id means an earlier
	// attempt may have created the record before crashing or timing out:
	// reconcile before creating.
	return a.createOrAdopt(ctx, lease, rec, createInDoubt(state) || a.cfg.LookupBeforeCreate, "")
}

// createInDoubt says whether an earlier attempt may have created a remote
// record we know no id of: a write was in doubt when this lease was taken
// and no remote record is known.
func createInDoubt(state store.State) bool {
	inDoubt := state.Intent != nil && state.Intent.Version > state.AppliedVersion
	return inDoubt && (state.RemoteID == "" || state.Deleted)
}

// createOrAdopt finds an existing remote record by external id (when lookup
// is set), adopting it and removing duplicates, or creates one. The intent
// Acquire recorded covers the create: should it land unseen, the next
// attempt finds the write in doubt and looks up first.
func (a *Applier) createOrAdopt(ctx context.Context, lease store.Lease, rec sink.Record, lookup bool, prefer string) (string, error) {
	// The record a lookup found may vanish before its update (a zombie's
	// delete landing late): look again rather than take the 404 for a
	// permanent answer, a few times.
	for try := 1; lookup; try++ {
		ids, err := a.sink.Lookup(ctx, rec.Entity, rec.Key)
		if err != nil {
			return "", err
		}
		if len(ids) == 0 {
			break
		}
		keep := pick(ids, prefer)
		if err := a.removeExtras(ctx, rec.Entity, ids, keep); err != nil {
			return "", err
		}
		err = a.sink.Update(ctx, keep, rec)
		if errors.Is(err, sink.ErrNotFound) && try < 3 {
			continue
		}
		if err != nil {
			return "", err
		}
		return keep, nil
	}
	return a.sink.Create(ctx, rec)
}

// deleteRemote removes the remote record (and any duplicates found while
// reconciling). A record already gone is success.
func (a *Applier) deleteRemote(ctx context.Context, lease store.Lease, state store.State, version int64) error {
	// A zombie's create, like one in doubt, may have left records we know
	// no id of. Any write in doubt may have been a create even when a
	// remote id is known: an update that found its record gone creates
	// one (found by the simulation, seed 137918).
	pendingCreate := (state.Intent != nil && state.Intent.Version > state.AppliedVersion) || state.RepairNeeded
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
		rec := sink.Record{Entity: last.Entity, Key: last.Key, Version: last.Version, Data: last.Data, EventID: last.ID}
		// Always look up: the zombie may have been a create.
		remoteID, err = a.createOrAdopt(held, lease, rec, true, state.RemoteID)
	}
	if err != nil {
		// A repair writes the applied version, which has no intent: its
		// failures are not counted against a newer write's budget.
		return a.callFailure(ctx, held, lease, state, 0, attempt, err)
	}
	out := a.commit(ctx, lease, store.Commit{Version: last.Version, RemoteID: remoteID, Deleted: last.Op == event.OpDelete, Event: state.LastEvent})
	if out.Result == ResultApplied {
		out.Result = ResultRepaired
	}
	return out
}

// release gives back a lease no API call went out under: whether it was
// lost does not matter.
func (a *Applier) release(ctx context.Context, lease store.Lease) {
	if !lease.Held() {
		return
	}
	ctx, cancel := releaseContext(ctx)
	defer cancel()
	if err := a.store.Release(ctx, lease); err != nil && !errors.Is(err, store.ErrFenced) {
		// The lease expires on its own; other workers wait at most its TTL.
		a.cfg.Logger.Warn("release lease failed; it will expire", "key", lease.Key.String(), "err", err)
	}
}

// releaseTimeout bounds giving a lease back after the worker's context
// ended (shutdown past its grace period).
const releaseTimeout = 2 * time.Second

// releaseContext is ctx for giving a lease back, or, once ctx has ended,
// a context of its own bounded by releaseTimeout: a call cancelled by a
// shutdown still gives its lease back, so its key is free at once rather
// than locked for the rest of the lease's TTL.
func releaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
}

// errLeaseLost ends a call's context when its lease could not be renewed.
var errLeaseLost = errors.New("engine: lease lost")

// keepLease renews lease every third of its TTL until stop is called. The
// returned context ends (cause errLeaseLost) when a renewal finds the lease
// taken, or when two renewals in a row failed (the store is unreachable and
// the lease may expire before the next): the calls under it stop, and
// callFailure schedules a repair. A
// timer rather than a goroutine per event: most events finish long before
// the first renewal.
func (a *Applier) keepLease(ctx context.Context, lease store.Lease) *leaseKeeper {
	// One allocation for the keeper's state instead of one per captured
	// variable: this runs for every event that writes.
	k := &leaseKeeper{a: a, lease: lease, every: a.cfg.LeaseTTL / 3}
	k.held, k.cancel = context.WithCancelCause(ctx)
	k.mu.Lock() // renew reads timer
	k.timer = time.AfterFunc(k.every, k.renew)
	k.mu.Unlock()
	return k
}

// leaseKeeper is keepLease's renewal state; held is the context the calls
// under the lease run in.
type leaseKeeper struct {
	a      *Applier
	lease  store.Lease
	every  time.Duration
	held   context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup
	timer   *time.Timer
	failed  int // renewals failed in a row; only renew touches it
}

// renew is the timer's callback.
func (k *leaseKeeper) renew() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.running.Add(1)
	k.mu.Unlock()
	defer k.running.Done()
	_, err := k.a.store.Extend(k.held, k.lease, k.a.cfg.LeaseTTL)
	if errors.Is(err, store.ErrFenced) {
		k.cancel(errLeaseLost)
		return
	}
	if err == nil {
		k.failed = 0
	} else if k.failed++; k.failed >= 2 {
		// The store has been unreachable for two renewals: the lease
		// expires a third of its TTL from now and another worker may
		// take the key. Abandon the call before that rather than let it
		// land after the next holder's write.
		k.cancel(errLeaseLost)
		return
	}
	// After one failure, try again at the next tick.
	k.mu.Lock()
	if !k.stopped {
		k.timer.Reset(k.every)
	}
	k.mu.Unlock()
}

// stop ends the renewals, waits for one under way and ends held.
func (k *leaseKeeper) stop() {
	k.mu.Lock()
	k.stopped = true
	k.timer.Stop()
	k.mu.Unlock()
	k.running.Wait()
	k.cancel(nil)
}

// callFailure judges a failed sink call (before the lease is released,
// which a renewal would then take for a lost lease), gives the lease back
// and returns the event's fate. version is the version the call wrote (0
// for a repair): its API failures are counted in the store, so waiting (a
// locked key, a pause, an outage hold, an unreachable store or limiter)
// never uses up an event's attempts; only the API's own answers do.
func (a *Applier) callFailure(ctx, held context.Context, lease store.Lease, state store.State, version int64, attempt int, err error) Outcome {
	if errors.Is(context.Cause(held), errLeaseLost) && ctx.Err() == nil {
		// The lease was lost under the call (or could not be renewed),
		// which may still have reached the API after another worker's
		// write: flag the key so the next holder re-applies the newest
		// state, and come back.
		a.release(ctx, lease)
		if merr := a.markRepair(ctx, lease.Key); merr != nil {
			return a.unsettled(lease, merr)
		}
		return Outcome{Result: ResultRetried, Delay: jitter(a.cfg.LockedRetryDelay), Reason: "lease lost during the sink call; repair scheduled", Err: err}
	}
	out, counted := a.judge(held, state, version, attempt, err)
	// This call, or one before it under the lease, may have landed: the
	// lease goes back through settle, which flags the key if it was lost.
	release := a.store.Release
	if counted {
		release = a.store.ReleaseFailed
	}
	rctx, cancel := releaseContext(ctx)
	defer cancel()
	if _, serr := a.settle(rctx, lease, release(rctx, lease), release); serr != nil {
		return a.unsettled(lease, serr)
	}
	return out
}

// judge decides the fate of an event whose sink call failed with err, and
// whether the failure is counted against its intent (ReleaseFailed).
func (a *Applier) judge(held context.Context, state store.State, version int64, attempt int, err error) (Outcome, bool) {
	v := sink.Classify(held, err)
	switch {
	case v.Class == sink.ClassCanceled:
		return Outcome{Result: ResultReleased, Err: err}, false
	case v.Class == sink.ClassLocal:
		// Never sent: nothing to judge the API by. Wait and try again.
		return Outcome{Result: ResultRetried, Delay: a.waitDelay(attempt), Reason: err.Error(), Err: err}, false
	case !v.Class.Retryable():
		return Outcome{Result: ResultParked, Reason: err.Error(), Err: err}, false
	}
	failures := 1
	if version > 0 {
		if in := state.Intent; in != nil && in.Version == version {
			failures += in.Failures
		}
	} else {
		// A repair writes the newest state the store knows; it has no
		// intent to count on, and parking it would leave the key flagged
		// with nobody to repair it: it backs off and never parks.
		failures = attempt
	}
	out := Outcome{Result: ResultRetried, Reason: err.Error(), Err: err, SinkFailure: v.Class.Outage() && !sharedCall(err), RetryAfter: v.RetryAfter}
	if version > 0 && failures >= a.cfg.MaxAttempts {
		out.Result = ResultParked
		out.Reason = fmt.Sprintf("gave up after %d failed API calls: %v", failures, err)
		return out, true
	}
	out.Delay = max(Backoff(failures, a.cfg.BackoffBase, a.cfg.BackoffMax), v.RetryAfter)
	return out, version > 0
}

// storeFailure retries an event whose state store call failed. It never
// parks: the event is valid and the store will come back, so parking would
// turn a store outage into lost work; the event waits in the retry tiers.
func (a *Applier) storeFailure(attempt int, err error) Outcome {
	return Outcome{Result: ResultRetried, Delay: a.waitDelay(attempt), Reason: err.Error(), Err: err}
}

// maxWaitDelay caps the retry delay of an event that waits for something
// other than the API (a store or limiter coming back): it backs off, but
// never so far that it lags long after the cause went away.
const maxWaitDelay = 30 * time.Second

// waitDelay is the retry delay of a waiting event at this delivery attempt.
func (a *Applier) waitDelay(attempt int) time.Duration {
	return Backoff(attempt, a.cfg.BackoffBase, min(a.cfg.BackoffMax, max(a.cfg.BackoffBase, maxWaitDelay)))
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

// jitter spreads d over its last quarter (3/4 d to d) so retried events do
// not return in lockstep. Never above d: RabbitMQ rounds a delay up to the
// next retry tier, so a locked retry of 1s ± 25% used to land in the 5s
// tier half the time; at or below LockedRetryDelay (1s, the shortest
// default tier) it stays in the shortest one.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d*3/4 + rand.N(d/4+1)
}

func pick(ids []string, prefer string) string {
	for _, id := range ids {
		if id == prefer {
			return id
		}
	}
	return ids[0]
}
