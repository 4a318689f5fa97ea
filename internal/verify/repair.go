package verify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// RepairOptions say where corrective events go.
type RepairOptions struct {
	// Store is the workers' state store: verify flags keys for repair and
	// reads applied versions of extra keys.
	Store store.Store
	// Publisher is the bus the workers consume. Not used on a dry run.
	Publisher bus.Publisher
	// Stream defaults to bus.Live.
	Stream bus.Stream
	// DryRun reports the plan without flagging or publishing anything.
	DryRun bool
	// OnAction is called for every key acted on (or that would be).
	OnAction func(Action)
	// Owner names verify in the store's leases; default "verify-<pid>".
	Owner string
	// LockWait bounds how long verify waits for a worker's lease on a key
	// before skipping it; default 30s.
	LockWait time.Duration
	// BatchSize is how many events go to the broker per confirm; default 500.
	BatchSize int
}

func (o RepairOptions) withDefaults() RepairOptions {
	if o.Stream == "" {
		o.Stream = bus.Live
	}
	if o.Owner == "" {
		o.Owner = "verify-" + strconv.Itoa(os.Getpid())
	}
	if o.LockWait <= 0 {
		o.LockWait = 30 * time.Second
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.OnAction == nil {
		o.OnAction = func(Action) {}
	}
	return o
}

// Action is one corrective step.
type Action struct {
	Key     string   `json:"key"`
	Reason  string   `json:"reason"` // missing, differing, extra, unkeyed
	Op      event.Op `json:"op,omitempty"`
	Version int64    `json:"version,omitempty"`
	// MarkRepair is set when the key is flagged for repair first, so the
	// worker re-applies a version it already applied.
	MarkRepair bool `json:"mark_repair,omitempty"`
	// Skipped says why nothing was published for this key.
	Skipped string `json:"skipped,omitempty"`
}

// RepairSummary counts what Repair did (or would do on a dry run).
type RepairSummary struct {
	DryRun     bool  `json:"dry_run"`
	Upserts    int64 `json:"upserts"`
	Deletes    int64 `json:"deletes"`
	MarkRepair int64 `json:"mark_repair"`
	Skipped    int64 `json:"skipped"`
}

// Repair publishes one corrective event per missing or differing key (an
// upsert with the source's version and data) and per extra key (a delete),
// so the workers fix the drift through the normal pipeline. The worker
// skips an event whose version is not above the applied one unless the key
// is flagged for repair, so keys are flagged (MarkRepair) before their
// event is published when that may be the case. Duplicates are left to
// DeleteDuplicates; remote records without an external id cannot be
// reached by events and are only reported.
func (r *Result) Repair(ctx context.Context, opts RepairOptions) (RepairSummary, error) {
	opts = opts.withDefaults()
	sum := RepairSummary{DryRun: opts.DryRun}
	if opts.Store == nil {
		return sum, setting.Errorf("store", "repair needs the state store (the workers' store)")
	}
	if !opts.DryRun && opts.Publisher == nil {
		return sum, setting.Errorf("bus", "repair needs the bus (the workers' bus)")
	}
	p := &publisher{opts: opts, entity: r.cfg.Entity, run: strconv.FormatInt(r.cfg.Now().UnixNano(), 36), sum: &sum}
	if err := r.repairUpserts(ctx, p); err != nil {
		return sum, err
	}
	if err := r.repairExtras(ctx, p); err != nil {
		return sum, err
	}
	for _, s := range r.Report.Samples.Unkeyed {
		sum.Skipped++
		opts.OnAction(Action{Key: "", Reason: "unkeyed", Skipped: fmt.Sprintf("remote record %s has no external_id; delete it in the API by hand", s.RemoteIDs[0])})
	}
	if n := r.Report.Counts.Unkeyed - int64(len(r.Report.Samples.Unkeyed)); n > 0 {
		sum.Skipped += n
		opts.OnAction(Action{Reason: "unkeyed", Skipped: fmt.Sprintf("%d more remote records without external_id", n)})
	}
	return sum, p.flush(ctx)
}

// repairUpserts reads the expected side again for the data of every
// missing or differing key.
func (r *Result) repairUpserts(ctx context.Context, p *publisher) error {
	pending := int64(0)
	for _, e := range r.entries {
		e.flags &^= flagRepaired // from an earlier Repair (a dry run)
		if r.needsUpsert(e) {
			pending++
		}
	}
	if pending == 0 {
		return nil
	}
	err := r.cfg.Expected.Each(ctx, func(it Item) error {
		e, ok := r.entries[it.Key]
		if !ok || !r.needsUpsert(e) || it.Deleted || it.Version < e.version {
			return nil
		}
		e.flags |= flagRepaired
		pending--
		reason := "missing"
		if e.remotes > 0 {
			reason = "differing"
		}
		ev := event.Event{ID: p.nextID(), Entity: r.cfg.Entity, Key: it.Key, Version: it.Version, Op: event.OpUpsert, Data: it.Data}
		return p.add(ctx, ev, Action{Key: it.Key, Reason: reason, Op: event.OpUpsert, Version: it.Version, MarkRepair: true})
	})
	if err != nil {
		return fmt.Errorf("read expected states for repair from %s: %w", r.cfg.Expected, err)
	}
	if pending > 0 {
		for key, e := range r.entries {
			if r.needsUpsert(e) {
				p.skip(Action{Key: key, Reason: "missing", Skipped: "gone from the source since the check; nothing to publish"})
			}
		}
	}
	return nil
}

func (r *Result) needsUpsert(e *entry) bool {
	return e.flags&(flagDeleted|flagRepaired) == 0 && (e.remotes == 0 || e.flags&flagDiffers != 0)
}

// repairExtras publishes a delete for every remote key the source does not
// have, at a version the worker will act on.
func (r *Result) repairExtras(ctx context.Context, p *publisher) error {
	type target struct {
		key     string
		version int64 // the expected tombstone's version, 0 if none
	}
	var targets []target
	for key, e := range r.entries {
		if e.flags&flagDeleted != 0 && e.remotes > 0 {
			targets = append(targets, target{key, e.version})
		}
	}
	for key := range r.extras {
		targets = append(targets, target{key: key})
	}
	slices.SortFunc(targets, func(a, b target) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	for _, t := range targets {
		k := store.Key{Entity: r.cfg.Entity, Key: t.key}
		st, err := readState(ctx, p.opts.Store, k, p.opts.Owner, p.opts.LockWait)
		if err != nil {
			if errors.Is(err, store.ErrLocked) {
				p.skip(Action{Key: t.key, Reason: "extra", Skipped: "a worker held its lease for longer than the lock wait; run verify again"})
				continue
			}
			return err
		}
		a := Action{Key: t.key, Reason: "extra", Op: event.OpDelete}
		if st.Deleted && st.AppliedVersion >= t.version {
			// Already a tombstone: only a flagged repair makes the worker
			// look the key up and remove what is left.
			a.Version, a.MarkRepair = st.AppliedVersion, true
		} else {
			// Unknown (0) or applied: a higher version is applied normally;
			// for an unknown key the worker looks the key up remotely.
			a.Version = max(st.AppliedVersion+1, t.version, 1)
			if st.Deleted {
				a.Version = max(t.version, 1)
			}
		}
		if in := st.Intent; in != nil && in.Version >= a.Version {
			// A write is in doubt at that version or above: the worker
			// skips an older event as superseded by it, so the delete
			// goes above it.
			a.Version = in.Version + 1
		}
		ev := event.Event{ID: p.nextID(), Entity: r.cfg.Entity, Key: t.key, Version: a.Version, Op: event.OpDelete}
		if err := p.add(ctx, ev, a); err != nil {
			return err
		}
	}
	return nil
}

// readState reads k's state by taking and releasing its lease (version 0:
// recording no write in doubt), waiting while a worker holds it (at most
// wait).
func readState(ctx context.Context, st store.Store, k store.Key, owner string, wait time.Duration) (store.State, error) {
	deadline := time.Now().Add(wait)
	for {
		lease, state, err := st.Acquire(ctx, k, owner, 10*time.Second, 0)
		if err == nil {
			// A lease taken over meanwhile (ErrFenced) is harmless here:
			// nothing was written under it.
			if rerr := st.Release(ctx, lease); rerr != nil && !errors.Is(rerr, store.ErrFenced) {
				return state, fmt.Errorf("release lease on %s: %w", k, rerr)
			}
			return state, nil
		}
		var locked *store.LockedError
		if !errors.As(err, &locked) {
			return state, fmt.Errorf("read state of %s: %w", k, err)
		}
		delay := min(max(locked.RetryAfter, 50*time.Millisecond), time.Second)
		if time.Now().Add(delay).After(deadline) {
			return state, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return state, ctx.Err()
		case <-t.C:
		}
	}
}

// publisher batches corrective events: keys of a batch are flagged for
// repair, then the batch is published with confirms.
type publisher struct {
	opts   RepairOptions
	entity string
	run    string
	seq    int64
	sum    *RepairSummary
	batch  []bus.Message
	marks  []store.Key
	acts   []Action
}

func (p *publisher) nextID() string {
	p.seq++
	return "verify-" + p.run + "-" + strconv.FormatInt(p.seq, 10)
}

func (p *publisher) skip(a Action) {
	p.sum.Skipped++
	p.opts.OnAction(a)
}

func (p *publisher) add(ctx context.Context, ev event.Event, a Action) error {
	body, err := ev.Marshal()
	if err != nil {
		return fmt.Errorf("build corrective event for %s/%s: %w", ev.Entity, ev.Key, err)
	}
	p.batch = append(p.batch, bus.Message{Body: body})
	if a.MarkRepair {
		p.marks = append(p.marks, store.Key{Entity: ev.Entity, Key: ev.Key})
	}
	p.acts = append(p.acts, a)
	if len(p.batch) >= p.opts.BatchSize {
		return p.flush(ctx)
	}
	return nil
}

func (p *publisher) flush(ctx context.Context) error {
	if len(p.batch) == 0 {
		return nil
	}
	if !p.opts.DryRun {
		for _, k := range p.marks {
			if err := p.opts.Store.MarkRepair(ctx, k); err != nil {
				return fmt.Errorf("flag %s for repair: %w (nothing of this batch was published)", k, err)
			}
		}
		if err := p.opts.Publisher.Publish(ctx, p.opts.Stream, p.batch...); err != nil {
			return fmt.Errorf("publish %d corrective events to %s: %w (repairing again is safe: versions absorb duplicates)", len(p.batch), p.opts.Stream, err)
		}
	}
	for _, a := range p.acts {
		if a.Op == event.OpDelete {
			p.sum.Deletes++
		} else {
			p.sum.Upserts++
		}
		if a.MarkRepair {
			p.sum.MarkRepair++
		}
		p.opts.OnAction(a)
	}
	p.batch, p.marks, p.acts = p.batch[:0], p.marks[:0], p.acts[:0]
	return nil
}

// DedupOptions say how duplicates are removed.
type DedupOptions struct {
	// Sink deletes the surplus records.
	Sink sink.Sink
	// Store, when set, names the record to keep: the one whose id the
	// workers map the key to (State.RemoteID).
	Store store.Store
	// DryRun reports the plan without deleting.
	DryRun bool
	// OnAction is called for every duplicated key.
	OnAction func(DedupAction)
	// Owner and LockWait as in RepairOptions.
	Owner    string
	LockWait time.Duration
}

// DedupAction is the plan (or outcome) for one duplicated key.
type DedupAction struct {
	Key    string   `json:"key"`
	Keep   string   `json:"keep"`
	Why    string   `json:"why"` // "mapped by the store" or "listed first"
	Delete []string `json:"delete"`
	Err    string   `json:"error,omitempty"`
}

// DedupSummary counts remote records deleted (or to delete).
type DedupSummary struct {
	DryRun  bool  `json:"dry_run"`
	Keys    int64 `json:"keys"`
	Deleted int64 `json:"deleted"`
	Failed  int64 `json:"failed"`
}

// DeleteDuplicates keeps one remote record per duplicated key (the one the
// store maps, else the first listed, which for APIs listing in creation
// order such as the fake API is the oldest) and deletes the others through
// the sink.
func (r *Result) DeleteDuplicates(ctx context.Context, opts DedupOptions) (DedupSummary, error) {
	sum := DedupSummary{DryRun: opts.DryRun}
	if !opts.DryRun && opts.Sink == nil {
		return sum, setting.Errorf("verify.remote", "deleting duplicates needs the sink (DedupOptions.Sink)")
	}
	if opts.OnAction == nil {
		opts.OnAction = func(DedupAction) {}
	}
	ro := RepairOptions{Owner: opts.Owner, LockWait: opts.LockWait}.withDefaults()
	keys := make([]string, 0, len(r.dups))
	for k := range r.dups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		ids := r.dups[key]
		a := DedupAction{Key: key, Keep: ids[0], Why: "listed first"}
		if opts.Store != nil {
			st, err := readState(ctx, opts.Store, store.Key{Entity: r.cfg.Entity, Key: key}, ro.Owner, ro.LockWait)
			if err != nil {
				return sum, fmt.Errorf("duplicates of %s: %w", key, err)
			}
			if st.RemoteID != "" && slices.Contains(ids, st.RemoteID) {
				a.Keep, a.Why = st.RemoteID, "mapped by the store"
			}
		}
		for _, id := range ids {
			if id != a.Keep {
				a.Delete = append(a.Delete, id)
			}
		}
		sum.Keys++
		if !opts.DryRun {
			var failed []string
			for _, id := range a.Delete {
				if err := opts.Sink.Delete(ctx, r.cfg.Entity, id); err != nil && !errors.Is(err, sink.ErrNotFound) {
					sum.Failed++
					failed = append(failed, fmt.Sprintf("%s: %v", id, err))
					continue
				}
				sum.Deleted++
			}
			if len(failed) > 0 {
				a.Err = fmt.Sprint(failed)
			}
		} else {
			sum.Deleted += int64(len(a.Delete))
		}
		opts.OnAction(a)
	}
	return sum, nil
}
