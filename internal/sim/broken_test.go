package sim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/memory"
)

// forgetfulStore records no write in doubt: Acquire drops the version.
type forgetfulStore struct{ *memory.Store }

func (s forgetfulStore) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	return s.Store.Acquire(ctx, k, owner, ttl, 0)
}

// sharedOwnerStore takes every lease for one owner, and an owner may
// re-acquire its own lease: nobody is ever locked out.
type sharedOwnerStore struct{ *memory.Store }

func (s sharedOwnerStore) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	return s.Store.Acquire(ctx, k, "everyone", ttl, version)
}

// amnesicStore forgets repair flags.
type amnesicStore struct{ *memory.Store }

func (s amnesicStore) MarkRepair(ctx context.Context, k store.Key) error { return nil }

// quietStore says nothing when a lease it is asked to release was lost,
// as every store did before a release reported it.
type quietStore struct{ *memory.Store }

func (s quietStore) Release(ctx context.Context, l store.Lease) error {
	return quiet(s.Store.Release(ctx, l))
}

func (s quietStore) ReleaseFailed(ctx context.Context, l store.Lease) error {
	return quiet(s.Store.ReleaseFailed(ctx, l))
}

func quiet(err error) error {
	if errors.Is(err, store.ErrFenced) {
		return nil
	}
	return err
}

// TestSimulationNoticesBrokenStores runs the simulation over state stores
// with a deliberate bug and expects it to report the invariant the bug
// breaks within a few hundred seeds: the checks have teeth.
func TestSimulationNoticesBrokenStores(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(now func() time.Time) store.Store
		kinds []string
	}{
		{"no intent", func(now func() time.Time) store.Store {
			return forgetfulStore{memory.New(memory.Config{Now: now})}
		}, []string{"stale write"}},
		{"no repair", func(now func() time.Time) store.Store {
			return amnesicStore{memory.New(memory.Config{Now: now})}
		}, []string{"not converged"}},
		{"no lost lease on release", func(now func() time.Time) store.Store {
			return quietStore{memory.New(memory.Config{Now: now})}
		}, []string{"zombie write not repaired", "zombie write not repaired after a failure"}},
		{"no lock", func(now func() time.Time) store.Store {
			return sharedOwnerStore{memory.New(memory.Config{Now: now})}
		}, []string{"lease granted twice", "overlapping writes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const budget = 1000
			for seed := uint64(1); seed <= budget; seed++ {
				res := Run(Options{Seed: seed, Store: tc.store})
				for _, v := range res.Violations {
					for _, k := range tc.kinds {
						if v.Kind == k {
							t.Logf("seed %d caught it: %s", seed, v)
							return
						}
					}
				}
			}
			t.Fatalf("%d seeds over a store with %s reported none of %v", budget, tc.name, tc.kinds)
		})
	}
}
