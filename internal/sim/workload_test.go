package sim

import (
	"bytes"
	"testing"

	"github.com/eventsync/eventsync/event"
)

func TestWorkloadPublishesEveryVersion(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		s := newTestSched(seed)
		w := NewWorkload(s, WorkloadParams{Keys: 4, MaxVersions: 6, Delete: 0.3, Reorder: 0.3, Duplicate: 0.3, Stale: 0.5, Resync: 0.5, Poison: 2})
		published := map[*Event]int{}
		poison := 0
		for _, pl := range w.plan {
			ev, err := event.Parse(pl.body, 0)
			if pl.ev == nil {
				poison++
				if err == nil && ev.Entity == Entity {
					t.Fatalf("seed %d: poison message %s parses for entity %q", seed, pl.body, Entity)
				}
				continue
			}
			if err != nil {
				t.Fatalf("seed %d: %s: %v", seed, pl.body, err)
			}
			if ev.Key != pl.ev.Key.Key || ev.Version != pl.ev.Version || ev.Op != pl.ev.Op || !bytes.Equal(ev.Data, pl.ev.Data) {
				t.Fatalf("seed %d: body %s does not carry %+v", seed, pl.body, *pl.ev)
			}
			published[pl.ev]++
		}
		if poison != 2 {
			t.Fatalf("seed %d: %d poison messages", seed, poison)
		}
		for _, k := range w.Keys {
			prev := int64(0)
			for _, e := range w.History[k] {
				if e.Version <= prev {
					t.Fatalf("seed %d: %s versions not increasing", seed, k)
				}
				prev = e.Version
				if published[e] == 0 {
					t.Fatalf("seed %d: %s v%d never published", seed, k, e.Version)
				}
				if (e.Op == event.OpUpsert) != (e.Data != nil) {
					t.Fatalf("seed %d: %s v%d %s with data %s", seed, k, e.Version, e.Op, e.Data)
				}
			}
		}
	}
}

func TestWorkloadIsDrawnFromTheSeed(t *testing.T) {
	p := WorkloadParams{Keys: 3, MaxVersions: 5, Delete: 0.2, Reorder: 0.4, Duplicate: 0.2, Stale: 0.5, Resync: 0.5, Poison: 1}
	a, b := NewWorkload(newTestSched(7), p), NewWorkload(newTestSched(7), p)
	if len(a.plan) != len(b.plan) {
		t.Fatal("two workloads of one seed differ in length")
	}
	for i := range a.plan {
		if !bytes.Equal(a.plan[i].body, b.plan[i].body) || a.plan[i].stream != b.plan[i].stream {
			t.Fatalf("two workloads of one seed differ at %d", i)
		}
	}
}
