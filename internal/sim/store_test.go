package sim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/memory"
)

// storeObserver records what FaultStore reports.
type storeObserver struct {
	acquired   int
	marked     int
	violations []string
}

func (o *storeObserver) Acquired(t *Task, k store.Key, v int64, st store.State) { o.acquired++ }
func (o *storeObserver) MarkedRepair(t *Task, k store.Key)                      { o.marked++ }
func (o *storeObserver) StoreFailed(t *Task)                                    {}
func (o *storeObserver) Violation(kind, format string, args ...any) {
	o.violations = append(o.violations, kind)
}

func newTestStore() (*Sched, *FaultStore, *storeObserver) {
	s := newTestSched(1)
	obs := &storeObserver{}
	return s, NewFaultStore(s, NewTrace(50, nil), memory.New(memory.Config{Now: s.Now}), obs), obs
}

func TestFaultStoreFailsOnEitherSide(t *testing.T) {
	s, fs, _ := newTestStore()
	fs.Faults.Before = 1
	runTask(t, s, func(ctx context.Context) {
		if _, _, err := fs.Acquire(ctx, k1, "a", time.Minute, 1); !errors.Is(err, errStoreDown) {
			t.Errorf("acquire = %v, want an injected failure", err)
		}
	})
	fs.Faults = StoreFaults{After: 1}
	runTask(t, s, func(ctx context.Context) {
		// Refused before: the key is free, so this lease is taken, but its
		// answer is lost.
		if _, _, err := fs.Acquire(ctx, k1, "b", time.Minute, 1); !errors.Is(err, errStoreDown) {
			t.Errorf("acquire = %v, want an injected failure", err)
		}
	})
	fs.Faults = StoreFaults{}
	runTask(t, s, func(ctx context.Context) {
		_, _, err := fs.Acquire(ctx, k1, "c", time.Minute, 1)
		if !errors.Is(err, store.ErrLocked) {
			t.Errorf("acquire = %v, want ErrLocked: the lease whose answer was lost stands", err)
		}
	})
}

func TestFaultStoreBooksLeases(t *testing.T) {
	s, fs, obs := newTestStore()
	var holder, taker *Task
	var lease store.Lease
	holder = s.Spawn("holder", func(ctx context.Context) {
		var err error
		if lease, _, err = fs.Acquire(ctx, k1, "holder", time.Minute, 1); err != nil {
			t.Error(err)
		}
	})
	drive(t, s, first)
	if fs.Writer(holder, k1) != Held {
		t.Fatalf("holder is %s", fs.Writer(holder, k1))
	}
	s.Advance(2 * time.Minute)
	taker = s.Spawn("taker", func(ctx context.Context) {
		if _, _, err := fs.Acquire(ctx, k1, "taker", time.Minute, 2); err != nil {
			t.Error(err)
		}
	})
	drive(t, s, first)
	if fs.Writer(holder, k1) != Zombie || fs.Writer(taker, k1) != Held {
		t.Fatalf("after a takeover: holder %s, taker %s", fs.Writer(holder, k1), fs.Writer(taker, k1))
	}
	runTask(t, s, func(ctx context.Context) {
		if err := fs.Commit(ctx, lease, store.Commit{Version: 1}); !errors.Is(err, store.ErrFenced) {
			t.Errorf("the zombie's commit = %v, want ErrFenced", err)
		}
		if err := fs.MarkRepair(ctx, k1); err != nil {
			t.Error(err)
		}
	})
	if obs.acquired != 2 || obs.marked != 1 || len(obs.violations) != 0 {
		t.Fatalf("observer: %+v", obs)
	}
	if _, held := fs.Holder(k1); !held {
		t.Fatal("no holder booked")
	}
}
