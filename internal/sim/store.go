package sim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/eventsync/eventsync/store"
)

// StoreFaults are the per-call probabilities of the state store's faults.
type StoreFaults struct {
	// Before fails a call before it takes effect.
	Before float64
	// After lets a call take effect, then fails it: the caller does not
	// know the outcome.
	After float64
	// Slow lets more turns pass before the answer.
	Slow float64
}

// errStoreDown is the injected store failure's cause.
var errStoreDown = errors.New("connection reset by peer (injected)")

// StoreObserver is told what FaultStore sees.
type StoreObserver interface {
	// Acquired reports that t took k's lease for version and found st.
	Acquired(t *Task, k store.Key, version int64, st store.State)
	// MarkedRepair reports that t flagged k for repair.
	MarkedRepair(t *Task, k store.Key)
	// StoreFailed reports that a call of t failed by injection.
	StoreFailed(t *Task)
	// Violation reports a broken invariant.
	Violation(kind, format string, args ...any)
}

// leaseEntry is the simulation's own record of a key's newest lease.
type leaseEntry struct {
	token    int64
	owner    string
	task     *Task
	expires  time.Time
	released bool
	// unknown: a call may or may not have dropped the lease (a stale
	// commit); the double-grant check skips the key until its next lease.
	unknown bool
}

type taskLease struct {
	t *Task
	k store.Key
}

// FaultStore wraps a store.Store for the simulation: every call is a yield
// point before it takes effect and after, may fail on either side, and the
// leases it hands out are booked so that the API model can tell a lease
// holder from a zombie and the run can check that no key is ever leased to
// two live holders.
type FaultStore struct {
	s      *Sched
	tr     *Trace
	inner  store.Store
	obs    StoreObserver
	Faults StoreFaults

	book     map[store.Key]*leaseEntry
	tokens   map[taskLease]int64
	released map[taskLease]bool
}

// NewFaultStore wraps inner.
func NewFaultStore(s *Sched, tr *Trace, inner store.Store, obs StoreObserver) *FaultStore {
	return &FaultStore{
		s: s, tr: tr, inner: inner, obs: obs,
		book:     map[store.Key]*leaseEntry{},
		tokens:   map[taskLease]int64{},
		released: map[taskLease]bool{},
	}
}

var _ store.Store = (*FaultStore)(nil)

// Inner is the wrapped store, for the run's own reads (no faults, no
// turns).
func (fs *FaultStore) Inner() store.Store { return fs.inner }

// Writer implements Observer.Writer from the lease book.
func (fs *FaultStore) Writer(t *Task, k store.Key) WriterStatus {
	tl := taskLease{t, k}
	tok, ok := fs.tokens[tl]
	if !ok || fs.released[tl] {
		return Unleased
	}
	if e := fs.book[k]; e == nil || e.token != tok {
		return Zombie
	}
	return Held
}

// Expiry implements Observer.Expiry from the lease book.
func (fs *FaultStore) Expiry(t *Task, k store.Key) (time.Time, bool) {
	if fs.Writer(t, k) != Held {
		return time.Time{}, false
	}
	return fs.book[k].expires, true
}

// Holder returns the task holding k's newest unreleased lease, if any.
func (fs *FaultStore) Holder(k store.Key) (*Task, bool) {
	e := fs.book[k]
	if e == nil || e.released || e.unknown {
		return nil, false
	}
	return e.task, true
}

// call runs one store call: a turn passes, it may fail before taking
// effect, fn takes effect, it may fail after, and a turn passes again
// before the caller sees the answer.
func (fs *FaultStore) call(ctx context.Context, op string, fn func() error) error {
	t := TaskOf(ctx)
	if t == nil || t != fs.s.Current() {
		panic(fmt.Sprintf("sim: store %s called outside its task's turn (a real-time lease renewal?)", op))
	}
	if err := fs.s.Yield(); err != nil {
		return err
	}
	if fs.s.Chance(fs.Faults.Before) {
		err := fmt.Errorf("simulated store: %s: %w", op, errStoreDown)
		fs.tr.Addf("%s store %s -> failed before taking effect", t.Name, op)
		fs.obs.StoreFailed(t)
		return err
	}
	err := fn()
	if fs.s.Chance(fs.Faults.After) {
		fs.tr.Addf("%s store %s: answer lost (%v)", t.Name, op, errOrOK(err))
		err = fmt.Errorf("simulated store: %s: %w", op, errStoreDown)
		fs.obs.StoreFailed(t)
	}
	for fs.s.Chance(fs.Faults.Slow) {
		if yerr := fs.s.Yield(); yerr != nil {
			return yerr
		}
	}
	if yerr := fs.s.Yield(); yerr != nil {
		return yerr
	}
	return err
}

func errOrOK(err error) any {
	if err == nil {
		return "ok"
	}
	return err
}

// Acquire implements store.Store.
func (fs *FaultStore) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (lease store.Lease, st store.State, err error) {
	t := TaskOf(ctx)
	err = fs.call(ctx, "acquire "+k.String(), func() error {
		var ierr error
		lease, st, ierr = fs.inner.Acquire(ctx, k, owner, ttl, version)
		if ierr != nil {
			fs.tr.Addf("%s store acquire %s v%d -> %v", t.Name, k, version, ierr)
			return ierr
		}
		fs.obs.Acquired(t, k, version, st)
		if !lease.Held() {
			// Nothing to write (store.NothingToWrite): no lease to book.
			fs.tr.Addf("%s store acquire %s v%d -> no lease (nothing to write), %s", t.Name, k, version, stateFmt(st))
			return nil
		}
		fs.tr.Addf("%s store acquire %s v%d -> token %d, %s", t.Name, k, version, lease.Token, stateFmt(st))
		now := fs.s.Now()
		if e := fs.book[k]; e != nil && !e.released && !e.unknown && e.expires.After(now) && e.owner != owner {
			fs.obs.Violation("lease granted twice", "%s got token %d on %s while %s's token %d stands until +%s",
				t.Name, lease.Token, k, e.task.Name, e.token, fmtDur(e.expires.Sub(Epoch)))
		}
		fs.book[k] = &leaseEntry{token: lease.Token, owner: owner, task: t, expires: lease.Expires}
		fs.tokens[taskLease{t, k}] = lease.Token
		delete(fs.released, taskLease{t, k})
		return nil
	})
	if err != nil {
		return store.Lease{}, store.State{}, err
	}
	return lease, st, nil
}

// Extend implements store.Store.
func (fs *FaultStore) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (out store.Lease, err error) {
	t := TaskOf(ctx)
	err = fs.call(ctx, "extend "+l.Key.String(), func() error {
		var ierr error
		out, ierr = fs.inner.Extend(ctx, l, ttl)
		fs.tr.Addf("%s store extend %s token %d -> %v", t.Name, l.Key, l.Token, errOrOK(ierr))
		if e := fs.book[l.Key]; ierr == nil && e != nil && e.token == l.Token {
			e.expires = out.Expires
		}
		return ierr
	})
	return out, err
}

// Commit implements store.Store.
func (fs *FaultStore) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	t := TaskOf(ctx)
	return fs.call(ctx, "commit "+l.Key.String(), func() error {
		ierr := fs.inner.Commit(ctx, l, c)
		fs.tr.Addf("%s store commit %s token %d v%d id=%q deleted=%t -> %v", t.Name, l.Key, l.Token, c.Version, c.RemoteID, c.Deleted, errOrOK(ierr))
		switch {
		case ierr == nil:
			fs.dropped(t, l)
		case errors.Is(ierr, store.ErrStaleCommit):
			if e := fs.book[l.Key]; e != nil && e.token == l.Token {
				e.unknown = true
			}
		}
		return ierr
	})
}

// Release implements store.Store.
func (fs *FaultStore) Release(ctx context.Context, l store.Lease) error {
	t := TaskOf(ctx)
	return fs.call(ctx, "release "+l.Key.String(), func() error {
		ierr := fs.inner.Release(ctx, l)
		fs.tr.Addf("%s store release %s token %d -> %v", t.Name, l.Key, l.Token, errOrOK(ierr))
		if ierr == nil {
			fs.dropped(t, l)
		}
		return ierr
	})
}

// ReleaseFailed implements store.Store.
func (fs *FaultStore) ReleaseFailed(ctx context.Context, l store.Lease) error {
	t := TaskOf(ctx)
	return fs.call(ctx, "release-failed "+l.Key.String(), func() error {
		ierr := fs.inner.ReleaseFailed(ctx, l)
		fs.tr.Addf("%s store release-failed %s token %d -> %v", t.Name, l.Key, l.Token, errOrOK(ierr))
		if ierr == nil {
			fs.dropped(t, l)
		}
		return ierr
	})
}

// dropped books that t let go of l.
func (fs *FaultStore) dropped(t *Task, l store.Lease) {
	fs.released[taskLease{t, l.Key}] = true
	if e := fs.book[l.Key]; e != nil && e.token == l.Token {
		e.released = true
	}
}

// MarkRepair implements store.Store.
func (fs *FaultStore) MarkRepair(ctx context.Context, k store.Key) error {
	t := TaskOf(ctx)
	return fs.call(ctx, "mark-repair "+k.String(), func() error {
		ierr := fs.inner.MarkRepair(ctx, k)
		fs.tr.Addf("%s store mark-repair %s -> %v", t.Name, k, errOrOK(ierr))
		if ierr == nil {
			fs.obs.MarkedRepair(t, k)
		}
		return ierr
	})
}

// Scan implements store.Store.
func (fs *FaultStore) Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error {
	return fs.call(ctx, "scan "+entity, func() error { return fs.inner.Scan(ctx, entity, fn) })
}

// SetControl implements store.Control.
func (fs *FaultStore) SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	return fs.call(ctx, "set-control "+name, func() error { return fs.inner.SetControl(ctx, name, value, ttl) })
}

// GetControl implements store.Control.
func (fs *FaultStore) GetControl(ctx context.Context, name string) (v []byte, ok bool, err error) {
	err = fs.call(ctx, "get-control "+name, func() error {
		var ierr error
		v, ok, ierr = fs.inner.GetControl(ctx, name)
		return ierr
	})
	return v, ok, err
}

// ListControl implements store.Control.
func (fs *FaultStore) ListControl(ctx context.Context, prefix string) (m map[string][]byte, err error) {
	err = fs.call(ctx, "list-control "+prefix, func() error {
		var ierr error
		m, ierr = fs.inner.ListControl(ctx, prefix)
		return ierr
	})
	return m, err
}

// DeleteControl implements store.Control.
func (fs *FaultStore) DeleteControl(ctx context.Context, name string) error {
	return fs.call(ctx, "delete-control "+name, func() error { return fs.inner.DeleteControl(ctx, name) })
}

// Close closes the wrapped store.
func (fs *FaultStore) Close() error { return fs.inner.Close() }

// State reads k's state from the wrapped store without faults or turns.
func (fs *FaultStore) State(k store.Key) (store.State, bool) {
	var out store.State
	found := false
	err := fs.inner.Scan(context.Background(), k.Entity, func(sk store.Key, st store.State) error {
		if sk == k {
			out, found = st, true
		}
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("sim: reading %s from the store: %v", k, err))
	}
	return out, found
}

// stateFmt prints a State in the trace when the trace is shown.
type stateFmt store.State

func (st stateFmt) String() string { return fmtState(store.State(st)) }

func fmtState(st store.State) string {
	s := fmt.Sprintf("applied v%d", st.AppliedVersion)
	if st.RemoteID != "" {
		s += " id=" + st.RemoteID
	}
	if st.Deleted {
		s += " deleted"
	}
	if in := st.Intent; in != nil {
		s += fmt.Sprintf(" doubt v%d/f%d", in.Version, in.Failures)
	}
	if st.RepairNeeded {
		s += " repair"
	}
	return s
}
