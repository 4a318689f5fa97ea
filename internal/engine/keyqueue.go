package engine

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/store"
)

// keyQueue makes the events of one key that are in this process wait for
// each other in memory. Without it they would collide on the store's lease
// and go round the broker's retry tiers (a second or more each), which is
// what gave every hot-key run its tail. One handler at a time holds a key;
// a delivery of a held key is queued, without a slot, and the holder takes
// it on when it is done.
//
// The holder takes the newest version first and then the older ones that
// waited with it (they are stale by then: a store round trip each, no API
// call); events that arrive meanwhile form the next round. So a hot key
// costs one API call per round rather than one per event, and no event
// waits behind more than one round.
//
// A held key costs one slot, however many wait for it. Waiting deliveries
// are unacknowledged, though, so they count against the stream's prefetch:
// at most limit of them wait per key, so that one slow key cannot take the
// whole prefetch from the others, and a delivery beyond that takes the
// broker's shortest retry tier, as one whose key another process holds.
// They leave the queue only to be handled, handed back (shutdown, pause)
// or retried (waited too long): never dropped.
type keyQueue struct {
	limit  int                  // waiting deliveries per key
	gauges *prometheus.GaugeVec // waiting deliveries by stream; nil for none

	mu sync.Mutex
	// keys holds a key while a handler holds it; its keyWait is nil until
	// a delivery waits (most keys never have one: no allocation).
	keys    map[store.Key]*keyWait
	waiting map[bus.Stream]int
}

// keyWait is one held key's waiting deliveries.
type keyWait struct {
	round []*waiter // the round being worked off, newest taken first
	next  []*waiter // arrived since the round began
}

// waiter is a delivery waiting for its key.
type waiter struct {
	stream bus.Stream
	d      bus.Delivery
	ev     event.Event
	since  time.Time // when the worker received it
	// first is when the worker received the oldest version of the key
	// this one stands for (it follows them, newest first): a debounce
	// window runs from it. Zero: since.
	first time.Time
}

// received is when the oldest version w stands for was received.
func (w *waiter) received() time.Time {
	if w.first.IsZero() || w.since.Before(w.first) {
		return w.since
	}
	return w.first
}

// standFor makes a round's newest (last) waiter stand for the others: its
// debounce window runs from the oldest receipt among them, so a key that
// keeps changing still reaches the API within a window.
func standFor(round []*waiter) {
	newest := round[len(round)-1]
	for _, w := range round[:len(round)-1] {
		if r := w.received(); r.Before(newest.received()) {
			newest.first = r
		}
	}
}

// entry is enter's verdict.
type entry int

const (
	entryHold   entry = iota // the caller holds the key now
	entryQueued              // queued: the holder takes it on
	entryFull                // the key's waiting limit is reached
)

func newKeyQueue(limit int, gauges *prometheus.GaugeVec) *keyQueue {
	return &keyQueue{limit: max(1, limit), gauges: gauges, keys: map[store.Key]*keyWait{}, waiting: map[bus.Stream]int{}}
}

// count moves s's waiting count by delta; q.mu is held.
func (q *keyQueue) count(s bus.Stream, delta int) {
	q.waiting[s] += delta
	if q.gauges != nil {
		q.gauges.WithLabelValues(string(s)).Add(float64(delta))
	}
}

// enter lets w's handler hold k, or queues w behind k's holder.
func (q *keyQueue) enter(k store.Key, w waiter) entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	kw, held := q.keys[k]
	switch {
	case !held:
		q.keys[k] = nil
		return entryHold
	case kw == nil:
		kw = &keyWait{}
		q.keys[k] = kw
	case len(kw.round)+len(kw.next) >= q.limit:
		return entryFull
	}
	p := new(waiter) // not &w: that would allocate w on every call
	*p = w
	kw.next = append(kw.next, p)
	q.count(w.stream, 1)
	return entryQueued
}

// handOn is called by k's holder when it is done: it returns the waiter
// that holds k now, or nil when none waits (k is free then).
func (q *keyQueue) handOn(k store.Key) *waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	kw := q.keys[k]
	if kw == nil || len(kw.round)+len(kw.next) == 0 {
		delete(q.keys, k)
		return nil
	}
	if len(kw.round) == 0 {
		// A new round, newest last so it is taken first; the rest follow
		// newest to oldest.
		kw.round, kw.next = kw.next, kw.round[:0]
		sortRound(kw.round)
		standFor(kw.round)
	}
	w := kw.round[len(kw.round)-1]
	kw.round[len(kw.round)-1] = nil
	kw.round = kw.round[:len(kw.round)-1]
	q.count(w.stream, -1)
	return w
}

// yieldToNewer is called by k's holder before it applies self: when a
// newer version of k waits, self joins the waiting (to follow the newest,
// which the holder's handOn returns next) and yieldToNewer reports true.
// So only the newest version in hand costs an API call; the older ones are
// settled after it is committed, as stale, with no call (coalescing).
func (q *keyQueue) yieldToNewer(k store.Key, self waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	kw := q.keys[k]
	if kw == nil {
		return false
	}
	newer := false
	for _, ws := range [2][]*waiter{kw.round, kw.next} {
		for _, w := range ws {
			newer = newer || w.ev.Version > self.ev.Version
		}
	}
	if !newer {
		return false
	}
	// One round of everything in hand, newest last so it is taken first.
	p := new(waiter)
	*p = self
	kw.round = append(append(kw.round, kw.next...), p)
	clear(kw.next)
	kw.next = kw.next[:0]
	sortRound(kw.round)
	standFor(kw.round)
	q.count(self.stream, 1)
	return true
}

// sortRound orders a round by version, newest last (taken first); equal
// versions keep their order.
func sortRound(round []*waiter) {
	slices.SortStableFunc(round, func(a, b *waiter) int {
		switch {
		case a.ev.Version < b.ev.Version:
			return -1
		case a.ev.Version > b.ev.Version:
			return 1
		}
		return 0
	})
}

// expired removes and returns the waiters received before cutoff (their
// holder is slow, or stuck on an unreachable store). Their keys stay held.
func (q *keyQueue) expired(cutoff time.Time) []*waiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*waiter
	keep := func(ws []*waiter) []*waiter {
		return slices.DeleteFunc(ws, func(w *waiter) bool {
			if w.since.Before(cutoff) {
				out = append(out, w)
				q.count(w.stream, -1)
				return true
			}
			return false
		})
	}
	for _, kw := range q.keys {
		if kw != nil {
			kw.round = keep(kw.round)
			kw.next = keep(kw.next)
		}
	}
	return out
}

// waitingOn reports how many deliveries of stream wait for their key.
func (q *keyQueue) waitingOn(s bus.Stream) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiting[s]
}
