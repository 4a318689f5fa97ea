package engine

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/memory"
)

// countingStore counts the calls made to the wrapped store, by method:
// each is one round trip to a real one.
type countingStore struct {
	store.Store
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingStore) count(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[method]++
}

// take returns the calls counted since the last take.
func (c *countingStore) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.calls
	c.calls = map[string]int{}
	return out
}

func (c *countingStore) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	c.count("Acquire")
	return c.Store.Acquire(ctx, k, owner, ttl, version)
}

func (c *countingStore) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	c.count("Extend")
	return c.Store.Extend(ctx, l, ttl)
}

func (c *countingStore) Commit(ctx context.Context, l store.Lease, cm store.Commit) error {
	c.count("Commit")
	return c.Store.Commit(ctx, l, cm)
}

func (c *countingStore) Release(ctx context.Context, l store.Lease) error {
	c.count("Release")
	return c.Store.Release(ctx, l)
}

func (c *countingStore) ReleaseFailed(ctx context.Context, l store.Lease) error {
	c.count("ReleaseFailed")
	return c.Store.ReleaseFailed(ctx, l)
}

func (c *countingStore) MarkRepair(ctx context.Context, k store.Key) error {
	c.count("MarkRepair")
	return c.Store.MarkRepair(ctx, k)
}

// Every event costs the fewest store round trips that keep it safe: a
// write takes the lease with its intent and commits with the release (2);
// an event with nothing to write (duplicate, stale, superseded) only reads,
// taking no lease to give back (1).
func TestApplyStoreRoundTripsPerEvent(t *testing.T) {
	st := &countingStore{Store: memory.New(memory.Config{}), calls: map[string]int{}}
	a, err := NewApplier(st, &latencySink{}, Config{WorkerID: "rt", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := store.Key{Entity: "listing", Key: "rt"}
	// A write of version 9 in doubt (its worker crashed after Acquire).
	doubt := store.Key{Entity: "listing", Key: "doubt"}
	if _, _, err := st.Store.Acquire(ctx, doubt, "crashed", time.Minute, 9); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		body []byte
		want Result
		trip map[string]int
	}{
		{upsert("rt", 1, "create"), ResultApplied, map[string]int{"Acquire": 1, "Commit": 1}},
		{upsert("rt", 3, "update"), ResultApplied, map[string]int{"Acquire": 1, "Commit": 1}},
		{upsert("rt", 3, "again"), ResultDuplicate, map[string]int{"Acquire": 1}},
		{upsert("rt", 2, "older"), ResultStale, map[string]int{"Acquire": 1}},
		{upsert("doubt", 4, "older"), ResultSuperseded, map[string]int{"Acquire": 1}},
	} {
		if out := a.Apply(ctx, c.body, 1); out.Result != c.want {
			t.Fatalf("%s: %s (%s), want %s", c.body, out.Result, out.Reason, c.want)
		}
		if got := st.take(); !maps.Equal(got, c.trip) {
			t.Errorf("%s (%s): store calls %v, want %v", c.body, c.want, got, c.trip)
		}
	}
	// Nothing was left leased: another owner takes the key at once.
	l, _, err := st.Store.Acquire(ctx, k, "other", time.Minute, 0)
	if err != nil {
		t.Fatalf("the key was left leased: %v", err)
	}
	if err := st.Store.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
}
