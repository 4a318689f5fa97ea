package engine

import (
	"slices"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/store"
)

func waiterOf(s bus.Stream, version int64, since time.Time) waiter {
	return waiter{stream: s, ev: event.Event{Entity: "listing", Key: "k", Version: version}, since: since}
}

// handOnAll hands k on until it is free and returns the versions taken.
func handOnAll(q *keyQueue, k store.Key) []int64 {
	var got []int64
	for w := q.handOn(k); w != nil; w = q.handOn(k) {
		got = append(got, w.ev.Version)
	}
	return got
}

// The holder takes the newest version of a round first, then the older
// ones of that round; what arrived meanwhile is the next round.
func TestKeyQueueTakesTheNewestOfEachRoundFirst(t *testing.T) {
	q := newKeyQueue(100, nil)
	k := store.Key{Entity: "listing", Key: "k"}
	now := time.Now()
	if got := q.enter(k, waiterOf(bus.Live, 1, now)); got != entryHold {
		t.Fatalf("first enter = %d, want hold", got)
	}
	for _, v := range []int64{3, 2, 5, 4} {
		if got := q.enter(k, waiterOf(bus.Live, v, now)); got != entryQueued {
			t.Fatalf("enter of version %d on a held key = %d, want queued", v, got)
		}
	}
	var got []int64
	w := q.handOn(k)
	got = append(got, w.ev.Version)
	// Arrive during the round: they wait for the next one, even the newer.
	for _, v := range []int64{9, 6} {
		q.enter(k, waiterOf(bus.Resync, v, now))
	}
	got = append(got, handOnAll(q, k)...)
	if want := []int64{5, 4, 3, 2, 9, 6}; !slices.Equal(got, want) {
		t.Fatalf("handed on %v, want %v", got, want)
	}
	if n := q.waitingOn(bus.Live) + q.waitingOn(bus.Resync); n != 0 {
		t.Fatalf("%d waiting after all were handed on", n)
	}
	// The key is free again: the next event holds it at once.
	if got := q.enter(k, waiterOf(bus.Live, 10, now)); got != entryHold {
		t.Fatalf("enter after the key was freed = %d, want hold", got)
	}
}

// At most limit deliveries wait per key, whatever their stream; other keys
// wait as before.
func TestKeyQueueBoundsTheWaitingPerKey(t *testing.T) {
	q := newKeyQueue(2, nil)
	now := time.Now()
	a, b := store.Key{Entity: "listing", Key: "a"}, store.Key{Entity: "listing", Key: "b"}
	q.enter(a, waiterOf(bus.Live, 1, now))
	if q.enter(a, waiterOf(bus.Live, 2, now)) != entryQueued || q.enter(a, waiterOf(bus.Resync, 3, now)) != entryQueued {
		t.Fatal("the first two waiting deliveries were not queued")
	}
	if got := q.enter(a, waiterOf(bus.Live, 4, now)); got != entryFull {
		t.Fatalf("a third waiting delivery of one key = %d, want full", got)
	}
	q.enter(b, waiterOf(bus.Live, 1, now))
	if got := q.enter(b, waiterOf(bus.Live, 2, now)); got != entryQueued {
		t.Fatalf("a delivery of another key = %d, want queued", got)
	}
	if n := q.waitingOn(bus.Live); n != 2 {
		t.Fatalf("%d live deliveries waiting, want 2", n)
	}
	q.handOn(a)
	if got := q.enter(a, waiterOf(bus.Live, 5, now)); got != entryQueued {
		t.Fatalf("enter after one was handed on = %d, want queued", got)
	}
}

// Waiters received before the cutoff leave the queue (for the broker's
// retry); the key stays held and the others stay queued.
func TestKeyQueueExpiredRemovesOnlyLongWaits(t *testing.T) {
	q := newKeyQueue(10, nil)
	k := store.Key{Entity: "listing", Key: "k"}
	now := time.Now()
	q.enter(k, waiterOf(bus.Live, 1, now))
	q.enter(k, waiterOf(bus.Live, 2, now.Add(-time.Minute)))
	q.enter(k, waiterOf(bus.Live, 3, now))
	q.enter(k, waiterOf(bus.Live, 4, now.Add(-time.Minute)))
	late := q.expired(now.Add(-time.Second))
	var versions []int64
	for _, w := range late {
		versions = append(versions, w.ev.Version)
	}
	slices.Sort(versions)
	if !slices.Equal(versions, []int64{2, 4}) {
		t.Fatalf("expired %v, want [2 4]", versions)
	}
	if n := q.waitingOn(bus.Live); n != 1 {
		t.Fatalf("%d waiting after expiry, want 1", n)
	}
	if got := handOnAll(q, k); !slices.Equal(got, []int64{3}) {
		t.Fatalf("handed on %v after expiry, want [3]", got)
	}
}

// A holder about to apply an older version yields to a newer one in hand:
// the newest goes next, the holder's follows with the rest of the round.
func TestKeyQueueHolderYieldsToANewerVersion(t *testing.T) {
	q := newKeyQueue(100, nil)
	k := store.Key{Entity: "listing", Key: "k"}
	now := time.Now()
	self := waiterOf(bus.Live, 2, now)
	if got := q.enter(k, self); got != entryHold {
		t.Fatalf("first enter = %d, want hold", got)
	}
	if q.yieldToNewer(k, self) {
		t.Fatal("yielded with nothing waiting")
	}
	q.enter(k, waiterOf(bus.Live, 1, now))
	if q.yieldToNewer(k, self) {
		t.Fatal("yielded to an older version")
	}
	q.enter(k, waiterOf(bus.Resync, 7, now))
	q.enter(k, waiterOf(bus.Live, 4, now))
	if !q.yieldToNewer(k, self) {
		t.Fatal("did not yield to versions 7 and 4")
	}
	if n := q.waitingOn(bus.Live); n != 3 {
		t.Fatalf("%d live deliveries waiting after the yield, want 3 (1, 4 and the holder's 2)", n)
	}
	if got, want := handOnAll(q, k), []int64{7, 4, 2, 1}; !slices.Equal(got, want) {
		t.Fatalf("handed on %v, want %v", got, want)
	}
	if got := q.enter(k, waiterOf(bus.Live, 8, now)); got != entryHold {
		t.Fatalf("enter after the key was freed = %d, want hold", got)
	}
}

// The version a round's holder takes first stands for the older ones of
// its round: a debounce window runs from the oldest receipt among them
// (so a key that keeps changing still reaches the API within a window),
// whether the round forms in handOn or when the holder yields.
func TestKeyQueueNewestStandsForTheOldestReceipt(t *testing.T) {
	q := newKeyQueue(100, nil)
	k := store.Key{Entity: "listing", Key: "k"}
	t0 := time.Now()
	q.enter(k, waiterOf(bus.Live, 1, t0))
	q.enter(k, waiterOf(bus.Live, 3, t0.Add(2*time.Second)))
	q.enter(k, waiterOf(bus.Live, 2, t0.Add(time.Second)))
	w := q.handOn(k)
	if w.ev.Version != 3 || !w.received().Equal(t0.Add(time.Second)) {
		t.Fatalf("handed on version %d received %s after the first, want version 3 standing for version 2's receipt, 1s",
			w.ev.Version, w.received().Sub(t0))
	}
	handOnAll(q, k)

	// The holder (received at t0) yields to a newer version received later.
	q.enter(k, waiterOf(bus.Live, 4, t0))
	q.enter(k, waiterOf(bus.Live, 5, t0.Add(3*time.Second)))
	if !q.yieldToNewer(k, waiterOf(bus.Live, 4, t0)) {
		t.Fatal("the holder did not yield to a newer version")
	}
	if w := q.handOn(k); w.ev.Version != 5 || !w.received().Equal(t0) {
		t.Fatalf("handed on version %d received %s after the first, want version 5 standing for the holder's receipt", w.ev.Version, w.received().Sub(t0))
	}
}
