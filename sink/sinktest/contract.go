package sinktest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/eventsync/eventsync/sink"
)

func (s suite) createReturnsRemoteID(t *testing.T) {
	c := s.env(t)
	a, b := c.key("a"), c.key("b")
	idA, idB := c.create(a, "A"), c.create(b, "B")
	if idA == idB {
		t.Fatalf("creates of %q and %q both returned remote id %q", a, b, idA)
	}
	c.wantLookup(a, idA)
	c.wantLookup(b, idB)
}

func (s suite) createIsNotIdempotent(t *testing.T) {
	c := s.env(t)
	k := c.key("twice")
	first, second := c.create(k, "first"), c.create(k, "second")
	if first == second {
		t.Logf("the API deduplicates creates by external id (both returned %q); allowed, not assumed", first)
	}
	// The engine resolves a create in doubt by this lookup, and verify
	// finds duplicates by it: it must see every record of the key.
	c.wantLookup(k, first, second)
}

func (s suite) lookupUnknownKey(t *testing.T) {
	c := s.env(t)
	c.create(c.key("known"), "known") // an API that ignores the filter returns this one
	ids, err := c.env.Sink.Lookup(c.ctx, c.env.Entity, c.key("unknown"))
	if err != nil {
		t.Fatalf("Lookup of an unknown key: %v; want no ids and no error", err)
	}
	if len(ids) != 0 {
		t.Fatalf("Lookup of an unknown key = %q; want none", ids)
	}
}

func (s suite) lookupMatchesWholeKey(t *testing.T) {
	c := s.env(t)
	ids := map[string]string{}
	for _, k := range []string{"ab", "a", "abc", "xab"} {
		ids[k] = c.create(c.key(k), k)
	}
	c.wantLookup(c.key("ab"), ids["ab"])
}

func (s suite) updateKeepsRecordAndKey(t *testing.T) {
	c := s.env(t)
	k := c.key("updated")
	id := c.create(k, "before-"+c.prefix)
	after := "after-" + c.prefix
	if err := c.env.Sink.Update(c.ctx, id, c.record(k, 2, after)); err != nil {
		t.Fatalf("Update(%q) of an existing record: %v", id, err)
	}
	c.wantLookup(k, id) // the update kept the external id
	if c.lister == nil {
		return
	}
	r, ok := c.listed()[id]
	switch {
	case !ok:
		t.Fatalf("the updated record %q is not listed", id)
	case r.Key != k:
		t.Errorf("listed record %q has external id %q; want %q", id, r.Key, k)
	case !hasValue(r.Fields, after) || hasValue(r.Fields, "before-"+c.prefix):
		t.Errorf("listed record %q = %v after the update; want the new data (%q) and not the old", id, r.Fields, after)
	}
}

func (s suite) deleteThenLookup(t *testing.T) {
	c := s.env(t)
	k := c.key("deleted")
	first, second := c.create(k, "first"), c.create(k, "second")
	if err := c.env.Sink.Delete(c.ctx, c.env.Entity, first); err != nil {
		t.Fatalf("Delete(%q): %v", first, err)
	}
	if first != second {
		// verify --delete-duplicates removes all but one record this way.
		c.wantLookup(k, second)
		if err := c.env.Sink.Delete(c.ctx, c.env.Entity, second); err != nil {
			t.Fatalf("Delete(%q): %v", second, err)
		}
	}
	c.wantLookup(k)
	if listed := c.listed(); listed != nil {
		for _, id := range []string{first, second} {
			if _, ok := listed[id]; ok {
				t.Errorf("deleted record %q is still listed", id)
			}
		}
	}
}

func (s suite) missingRecordIsNotFound(t *testing.T) {
	c := s.env(t)
	k := c.key("gone")
	// A record created and deleted gives a remote id in the API's own
	// format that names no record.
	id := c.create(k, "gone")
	if err := c.env.Sink.Delete(c.ctx, c.env.Entity, id); err != nil {
		t.Fatalf("Delete(%q): %v", id, err)
	}
	wantNotFound(t, c.ctx, fmt.Sprintf("Update(%q) of a deleted record", id), c.env.Sink.Update(c.ctx, id, c.record(k, 2, "again")))
	wantNotFound(t, c.ctx, fmt.Sprintf("Delete(%q) of a deleted record", id), c.env.Sink.Delete(c.ctx, c.env.Entity, id))
	c.wantLookup(k) // the failed update created nothing
}

// oddKeys are keys an application may use that break a sink which pastes
// them into a URL unescaped.
var oddKeys = []string{"a/b", "../up", "sp ace", "q?x=1&y=2", "hash#frag", "pct%20", "plus+sign", "ünï©ødé", `quote"'`, `back\slash`, "semi;colon"}

func (s suite) oddKeys(t *testing.T) {
	c := s.env(t)
	if c.env.PlainKeys {
		t.Skip("Env.PlainKeys: the API accepts only plain external ids")
	}
	ids := map[string]string{}
	for _, odd := range oddKeys {
		ids[c.key(odd)] = c.create(c.key(odd), odd)
	}
	for k, id := range ids {
		c.wantLookup(k, id)
	}
	listed := c.listed()
	for k, id := range ids {
		if r, ok := listed[id]; listed != nil && (!ok || r.Key != k) {
			t.Errorf("record %q: listed %v with external id %q; want listed with %q", id, ok, r.Key, k)
		}
		if err := c.env.Sink.Update(c.ctx, id, c.record(k, 2, "updated")); err != nil {
			t.Errorf("Update(%q) of key %q: %v", id, k, err)
		}
		if err := c.env.Sink.Delete(c.ctx, c.env.Entity, id); err != nil {
			t.Errorf("Delete(%q) of key %q: %v", id, k, err)
		}
		c.wantLookup(k)
	}
}

func (s suite) listEveryRecordOnce(t *testing.T) {
	c := s.env(t)
	if c.lister == nil {
		t.Skip("the sink does not implement sink.Lister")
	}
	// Enough records to span pages of a small page size.
	want := map[string]string{} // remote id → key
	for i := range 12 {
		k := c.key(fmt.Sprint(i))
		want[c.create(k, "title-"+k)] = k
	}
	listed := c.listed() // fails on a record listed twice
	for id, k := range want {
		r, ok := listed[id]
		switch {
		case !ok:
			t.Errorf("record %q (key %q) is not listed", id, k)
		case r.Key != k:
			t.Errorf("record %q is listed with external id %q; want %q", id, r.Key, k)
		case !hasValue(r.Fields, "title-"+k):
			t.Errorf("record %q is listed with fields %v; want its data (%q) among them", id, r.Fields, "title-"+k)
		}
	}
}

func (s suite) listStopsOnCallbackError(t *testing.T) {
	c := s.env(t)
	if c.lister == nil {
		t.Skip("the sink does not implement sink.Lister")
	}
	for i := range 3 {
		c.create(c.key(fmt.Sprint(i)), "x")
	}
	stop := errors.New("sinktest: stop listing")
	calls := 0
	err := c.lister.List(c.ctx, c.env.Entity, func(sink.RemoteRecord) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List whose callback failed = %v; want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("List called back %d times after the callback failed on the first; want it to stop", calls)
	}
}

func (s suite) concurrentCalls(t *testing.T) {
	c := s.env(t)
	const goroutines = 8
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			if err := c.lifecycle(c.key(fmt.Sprintf("g%d", g))); err != nil {
				t.Errorf("goroutine %d: %v", g, err)
			}
		})
	}
	wg.Wait()
}

// lifecycle creates, looks up, updates and deletes key, returning the
// first problem (for use off the test's goroutine).
func (c *h) lifecycle(k string) error {
	id, err := c.tryCreate(c.ctx, k, "v1")
	if err != nil {
		return err
	}
	ids, err := c.tryLookup(c.ctx, k)
	if err != nil {
		return err
	}
	if !slices.Equal(ids, []string{id}) {
		return fmt.Errorf("Lookup(%q) = %q after creating %q", k, ids, id)
	}
	if err := c.env.Sink.Update(c.ctx, id, c.record(k, 2, "v2")); err != nil {
		return fmt.Errorf("Update(%q): %w", id, err)
	}
	if err := c.env.Sink.Delete(c.ctx, c.env.Entity, id); err != nil {
		return fmt.Errorf("Delete(%q): %w", id, err)
	}
	if ids, err := c.tryLookup(c.ctx, k); err != nil || len(ids) != 0 {
		return fmt.Errorf("Lookup(%q) after its delete = %q, %v; want none", k, ids, err)
	}
	return nil
}
