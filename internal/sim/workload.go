package sim

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/store"
)

// Entity is the entity type of every simulated event the sink handles.
const Entity = "item"

// Event is one change of one key, as the application produced it.
type Event struct {
	Key     store.Key
	Version int64
	Op      event.Op
	Data    json.RawMessage
}

// encode renders e as the application publishes it, under its own event id.
func (e *Event) encode(id string) []byte {
	ev := event.Event{ID: id, Entity: e.Key.Entity, Key: e.Key.Key, Version: e.Version, Op: e.Op, Data: e.Data}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(fmt.Sprintf("sim: encoding %s v%d: %v", e.Key, e.Version, err))
	}
	return b
}

// planned is one publication of the workload.
type planned struct {
	stream bus.Stream
	body   []byte
	ev     *Event // nil for poison
	poison string
}

// Workload is what the application publishes in one run: per key a
// history of versions from one increasing sequence (with gaps, as a
// shared counter gives), and the order the messages reach the broker in:
// mostly per-key order, with events reordered, published twice, repeated
// late (stale), copied onto the resync stream as snapshot events, and a
// few poison messages that no worker can apply.
type Workload struct {
	Keys    []store.Key
	History map[store.Key][]*Event // by increasing version
	plan    []planned
}

// WorkloadParams shape a workload.
type WorkloadParams struct {
	Keys        int     // distinct keys
	MaxVersions int     // versions per key, 1..MaxVersions
	Delete      float64 // share of deletes among the changes
	Reorder     float64 // chance that a message swaps with its predecessor
	Duplicate   float64 // chance an event is published a second time, later
	Stale       float64 // chance an old version is published again near the end
	Resync      float64 // chance a key gets a snapshot event on the resync stream
	Poison      int     // poison messages
}

// NewWorkload draws a workload from s's random source.
func NewWorkload(s *Sched, p WorkloadParams) *Workload {
	rng := s.Rand()
	w := &Workload{History: map[store.Key][]*Event{}}
	var queues [][]*Event
	for i := range p.Keys {
		k := store.Key{Entity: Entity, Key: fmt.Sprintf("k%d", i)}
		w.Keys = append(w.Keys, k)
		n := 1 + rng.IntN(max(1, p.MaxVersions))
		v := int64(0)
		var hist []*Event
		for range n {
			v += 1 + rng.Int64N(3)
			e := &Event{Key: k, Version: v, Op: event.OpUpsert}
			if s.Chance(p.Delete) {
				e.Op = event.OpDelete
			} else {
				e.Data = json.RawMessage(fmt.Sprintf(`{"n":%d,"price":%d}`, v, rng.IntN(1000)))
			}
			hist = append(hist, e)
		}
		w.History[k] = hist
		queues = append(queues, slices.Clone(hist))
	}
	// Interleave the keys' histories, each in order.
	var order []*Event
	for {
		var open []int
		for i, q := range queues {
			if len(q) > 0 {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			break
		}
		i := open[rng.IntN(len(open))]
		order = append(order, queues[i][0])
		queues[i] = queues[i][1:]
	}
	id := 0
	nextID := func() string { id++; return fmt.Sprintf("e%d", id) }
	for _, e := range order {
		w.plan = append(w.plan, planned{stream: bus.Live, body: e.encode(nextID()), ev: e})
	}
	// Snapshot events: a key's state at some version, on the resync
	// stream, published anywhere after that version was.
	for _, k := range w.Keys {
		if !s.Chance(p.Resync) {
			continue
		}
		hist := w.History[k]
		e := hist[rng.IntN(len(hist))]
		at := slices.IndexFunc(w.plan, func(pl planned) bool { return pl.ev == e })
		pos := at + 1 + rng.IntN(len(w.plan)-at)
		w.plan = slices.Insert(w.plan, pos, planned{stream: bus.Resync, body: e.encode(nextID()), ev: e})
	}
	// Duplicates (the same message again, later) and stale repeats (an
	// old version near the end).
	for i := 0; i < len(w.plan); i++ {
		pl := w.plan[i]
		if s.Chance(p.Duplicate) {
			pos := i + 1 + rng.IntN(len(w.plan)-i)
			w.plan = slices.Insert(w.plan, pos, pl)
		}
	}
	for _, k := range w.Keys {
		hist := w.History[k]
		if len(hist) > 1 && s.Chance(p.Stale) {
			e := hist[rng.IntN(len(hist)-1)]
			pos := len(w.plan) - rng.IntN(min(len(w.plan), 4))
			w.plan = slices.Insert(w.plan, pos, planned{stream: bus.Live, body: e.encode(nextID()), ev: e})
		}
	}
	for i := 1; i < len(w.plan); i++ {
		if s.Chance(p.Reorder) {
			w.plan[i-1], w.plan[i] = w.plan[i], w.plan[i-1]
		}
	}
	for range p.Poison {
		body, why := poison(s, nextID())
		pos := rng.IntN(len(w.plan) + 1)
		w.plan = slices.Insert(w.plan, pos, planned{stream: bus.Streams[rng.IntN(2)], body: body, poison: why})
	}
	return w
}

// poison returns a message no worker can apply, and why.
func poison(s *Sched, id string) ([]byte, string) {
	switch s.Rand().IntN(5) {
	case 0:
		return []byte(`{"id":"` + id + `","entity":"item","key":`), "not JSON"
	case 1:
		return []byte(`{"id":"` + id + `","entity":"ghost","key":"k0","version":1,"op":"upsert","data":{}}`), "unknown entity"
	case 2:
		return []byte(`{"id":"` + id + `","entity":"item","key":"k0","version":0,"op":"upsert","data":{}}`), "version 0"
	case 3:
		return []byte(`{"id":"` + id + `","entity":"item","key":"k0","version":3,"op":"merge","data":{}}`), "unknown op"
	default:
		return []byte(`{"id":"` + id + `","entity":"item","key":"k0","version":2,"op":"upsert"}`), "upsert without data"
	}
}

// Newest is k's newest event.
func (w *Workload) Newest(k store.Key) *Event {
	h := w.History[k]
	return h[len(h)-1]
}

// Len is the number of messages the workload publishes.
func (w *Workload) Len() int { return len(w.plan) }
