package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
)

// clockSkew bounds how far the store's clock, which stamps Intent.At, may be
// from the test's. It only catches a wrong unit or a missing stamp.
const clockSkew = time.Minute

// readState takes k's lease to look (version 0) and releases it.
func readState(t *testing.T, s store.Store, k store.Key) store.State {
	t.Helper()
	l, st := mustAcquire(t, s, k, "reader", longTTL)
	if err := s.Release(ctxFor(t), l); err != nil {
		t.Fatalf("Release(%s): %v", k, err)
	}
	return st
}

func mustRelease(t *testing.T, s store.Store, l store.Lease) {
	t.Helper()
	if err := s.Release(ctxFor(t), l); err != nil {
		t.Fatalf("Release(%s token %d): %v", l.Key, l.Token, err)
	}
}

func mustReleaseFailed(t *testing.T, s store.Store, l store.Lease) {
	t.Helper()
	if err := s.ReleaseFailed(ctxFor(t), l); err != nil {
		t.Fatalf("ReleaseFailed(%s token %d): %v", l.Key, l.Token, err)
	}
}

// checkIntent compares every field of got but At.
func checkIntent(t *testing.T, what string, got *store.Intent, version, token int64, failures int) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no intent, want version %d token %d failures %d", what, version, token, failures)
	}
	if got.Version != version || got.Token != token || got.Failures != failures {
		t.Fatalf("%s: intent %+v, want version %d token %d failures %d", what, *got, version, token, failures)
	}
}

// checkRecorded checks an intent just recorded by the Acquire of version
// with lease token, made between before and after, and returns it.
func checkRecorded(t *testing.T, what string, got *store.Intent, version, token int64, before, after time.Time) *store.Intent {
	t.Helper()
	checkIntent(t, what, got, version, token, 0)
	if got.At.Before(before.Add(-clockSkew)) || got.At.After(after.Add(clockSkew)) {
		t.Errorf("%s: intent recorded at %s, want between %s and %s (give or take %s)", what, got.At, before, after, clockSkew)
	}
	return got
}

// withIntent returns st with intent in.
func withIntent(st store.State, in *store.Intent) store.State {
	st.Intent = in
	return st
}

func testAcquireRecordsIntent(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "recorded"}
	c := commitVersion(t, s, k, 2)
	before := time.Now()
	l, st := mustAcquireVersion(t, s, k, "w1", longTTL, 3)
	after := time.Now()
	// The reply is the state before: no intent stood.
	assertState(t, "returned by the recording Acquire", st, commitState(c))
	// A crash: the lease goes, the write stays in doubt.
	mustRelease(t, s, l)
	st = readState(t, s, k)
	in := checkRecorded(t, "after release", st.Intent, 3, l.Token, before, after)
	assertState(t, "after release", st, withIntent(commitState(c), in))
	// On a key the store has never seen the intent is recorded as well.
	fresh := store.Key{Entity: "intent", Key: "fresh"}
	before = time.Now()
	l, st = mustAcquireVersion(t, s, fresh, "w1", longTTL, 1)
	after = time.Now()
	assertState(t, "fresh key", st, store.State{})
	mustRelease(t, s, l)
	st = readState(t, s, fresh)
	freshIn := checkRecorded(t, "fresh key after release", st.Intent, 1, l.Token, before, after)
	// Scan reports both as they are stored.
	seen := map[store.Key]store.State{}
	if err := s.Scan(ctxFor(t), "intent", func(k store.Key, st store.State) error {
		seen[k] = st
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(seen) != 2 {
		t.Fatalf("Scan visited %v, want 2 keys", sortedKeys(seen))
	}
	assertState(t, "Scan "+k.String(), seen[k], withIntent(commitState(c), in))
	assertState(t, "Scan "+fresh.String(), seen[fresh], withIntent(store.State{}, freshIn))
}

func testAcquireReturnsPreviousIntent(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "previous"}
	c := commitVersion(t, s, k, 1)
	l1, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 3)
	mustRelease(t, s, l1)
	in3 := readState(t, s, k).Intent
	checkIntent(t, "first intent", in3, 3, l1.Token, 0)
	// A newer version replaces the intent and gets the one it replaced.
	before := time.Now()
	l2, st := mustAcquireVersion(t, s, k, "w2", longTTL, 5)
	after := time.Now()
	assertState(t, "returned by the newer Acquire", st, withIntent(commitState(c), in3))
	mustRelease(t, s, l2)
	st = readState(t, s, k)
	in5 := checkRecorded(t, "after the newer Acquire", st.Intent, 5, l2.Token, before, after)
	assertState(t, "after the newer Acquire", st, withIntent(commitState(c), in5))
	// The owner re-acquiring its own lease is no different.
	l3, _ := mustAcquireVersion(t, s, k, "w3", longTTL, 6)
	l4, st := mustAcquireVersion(t, s, k, "w3", longTTL, 7)
	checkIntent(t, "returned by a re-acquire", st.Intent, 6, l3.Token, 0)
	mustRelease(t, s, l4)
	checkIntent(t, "after a re-acquire", readState(t, s, k).Intent, 7, l4.Token, 0)
}

func testAcquireVersionZeroRecordsNothing(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "zero"}
	c := commitVersion(t, s, k, 2)
	l, st := mustAcquire(t, s, k, "w1", longTTL)
	assertState(t, "returned by a version 0 Acquire", st, commitState(c))
	mustRelease(t, s, l)
	assertState(t, "after a version 0 Acquire", readState(t, s, k), commitState(c))
	// Nor does it touch a standing intent.
	l, _ = mustAcquireVersion(t, s, k, "w1", longTTL, 4)
	mustRelease(t, s, l)
	in := readState(t, s, k).Intent
	checkIntent(t, "intent", in, 4, l.Token, 0)
	l2, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "returned by a version 0 Acquire over an intent", st, withIntent(commitState(c), in))
	mustRelease(t, s, l2)
	assertState(t, "after a version 0 Acquire over an intent", readState(t, s, k), withIntent(commitState(c), in))
}

func testAcquireOlderVersionKeepsIntent(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "older"}
	c := commitVersion(t, s, k, 3)
	l, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 6)
	mustRelease(t, s, l)
	in := readState(t, s, k).Intent
	checkIntent(t, "intent", in, 6, l.Token, 0)
	// Older versions, above the applied one or not, see the newer write in
	// doubt and leave it as it is (they have nothing to write: no lease).
	for _, v := range []int64{5, 4, 3, 1} {
		st := expectNoLease(t, s, k, "w2", v)
		assertState(t, "returned to an older version", st, withIntent(commitState(c), in))
	}
	assertState(t, "after older versions", readState(t, s, k), withIntent(commitState(c), in))
	// With no intent standing, a version at or below the applied one
	// records nothing either.
	applied := store.Key{Entity: "intent", Key: "at-applied"}
	ca := commitVersion(t, s, applied, 5)
	for _, v := range []int64{5, 4} {
		expectNoLease(t, s, applied, "w1", v)
		assertState(t, "after an Acquire not above the applied version", readState(t, s, applied), commitState(ca))
	}
}

func testAcquireSameVersionKeepsIntent(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "same"}
	l1, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 4)
	mustReleaseFailed(t, s, l1)
	in := readState(t, s, k).Intent
	checkIntent(t, "after a failure", in, 4, l1.Token, 1)
	// The retry of the same version keeps the intent, its token and its
	// failures: the attempt budget spans the attempts.
	l2, st := mustAcquireVersion(t, s, k, "w2", longTTL, 4)
	assertState(t, "returned to the retry", st, withIntent(store.State{}, in))
	mustRelease(t, s, l2)
	assertState(t, "after the retry", readState(t, s, k), withIntent(store.State{}, in))
}

func testAcquireLockedRecordsNothing(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "locked"}
	c := commitVersion(t, s, k, 2)
	l1, _ := mustAcquire(t, s, k, "w1", longTTL)
	expectLockedVersion(t, s, k, "w2", 5)
	mustRelease(t, s, l1)
	assertState(t, "after a locked Acquire", readState(t, s, k), commitState(c))
	// Nor does a locked Acquire replace a standing intent.
	l1, _ = mustAcquireVersion(t, s, k, "w1", longTTL, 3)
	expectLockedVersion(t, s, k, "w2", 7)
	mustRelease(t, s, l1)
	checkIntent(t, "after a locked Acquire over an intent", readState(t, s, k).Intent, 3, l1.Token, 0)
}

func testReleaseFailedCountsFailures(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "failures"}
	c := commitVersion(t, s, k, 2)
	l1, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 3)
	mustReleaseFailed(t, s, l1)
	// Released: another owner takes the key at once and sees the count.
	l2, st := mustAcquireVersion(t, s, k, "w2", longTTL, 3)
	checkIntent(t, "after one failure", st.Intent, 3, l1.Token, 1)
	mustReleaseFailed(t, s, l2)
	// A retried call of a lease released already counts nothing.
	mustReleaseFailed(t, s, l2)
	st = readState(t, s, k)
	checkIntent(t, "after two failures", st.Intent, 3, l1.Token, 2)
	assertState(t, "after two failures", st, withIntent(commitState(c), st.Intent))
	var scanned *store.Intent
	if err := s.Scan(ctxFor(t), "intent", func(_ store.Key, st store.State) error {
		scanned = st.Intent
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	assertState(t, "Scan", store.State{Intent: scanned}, store.State{Intent: st.Intent})
	// A newer version's intent starts afresh.
	l3, st := mustAcquireVersion(t, s, k, "w3", longTTL, 4)
	checkIntent(t, "returned to a newer version", st.Intent, 3, l1.Token, 2)
	mustRelease(t, s, l3)
	checkIntent(t, "newer version", readState(t, s, k).Intent, 4, l3.Token, 0)
	// With no intent standing ReleaseFailed only releases.
	none := store.Key{Entity: "intent-none", Key: "no-intent"}
	cn := commitVersion(t, s, none, 1)
	l, _ := mustAcquire(t, s, none, "w1", longTTL)
	mustReleaseFailed(t, s, l)
	assertState(t, "ReleaseFailed without an intent", readState(t, s, none), commitState(cn))
}

func testReleaseFailedFenced(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "failed-fenced"}
	old, _ := mustAcquireVersion(t, s, k, "w1", shortTTL, 3)
	cur, st := acquireVersionWhenExpired(t, s, k, "w2", longTTL, 3)
	checkIntent(t, "returned to the takeover", st.Intent, 3, old.Token, 0)
	// The lost lease counts nothing, does not release the new one, and
	// says it was lost.
	if err := s.ReleaseFailed(ctxFor(t), old); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("ReleaseFailed of a lost lease = %v, want ErrFenced", err)
	}
	expectLocked(t, s, k, "w3")
	mustReleaseFailed(t, s, cur)
	checkIntent(t, "after the holder's failure", readState(t, s, k).Intent, 3, old.Token, 1)
}

func testCommitClearsIntentAtOrBelow(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "cleared"}
	// At its version: the write landed.
	l, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 4)
	c4 := store.Commit{Version: 4, RemoteID: "r4", Event: eventBytes(k, 4)}
	if err := s.Commit(ctxFor(t), l, c4); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertState(t, "after a commit of the intent's version", readState(t, s, k), commitState(c4))
	// Below it: a newer version's commit supersedes a write in doubt, and
	// its failures go with it.
	l, _ = mustAcquireVersion(t, s, k, "w1", longTTL, 6)
	mustReleaseFailed(t, s, l)
	l2, st := mustAcquire(t, s, k, "w2", longTTL)
	checkIntent(t, "before the newer commit", st.Intent, 6, l.Token, 1)
	c7 := store.Commit{Version: 7, RemoteID: "r7", Event: eventBytes(k, 7)}
	if err := s.Commit(ctxFor(t), l2, c7); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertState(t, "after a commit above the intent's version", readState(t, s, k), commitState(c7))
}

func testCommitKeepsNewerIntent(t *testing.T, s store.Store) {
	k := store.Key{Entity: "intent", Key: "kept"}
	c3 := commitVersion(t, s, k, 3)
	l, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 5)
	mustReleaseFailed(t, s, l)
	in := readState(t, s, k).Intent
	checkIntent(t, "write in doubt", in, 5, l.Token, 1)
	// A repair re-applies the applied version; the newer write stays in
	// doubt with its count.
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair: %v", err)
	}
	r, st := mustAcquire(t, s, k, "repairer", longTTL)
	want := withIntent(commitState(c3), in)
	want.RepairNeeded = true
	assertState(t, "before the repair", st, want)
	if err := s.Commit(ctxFor(t), r, c3); err != nil {
		t.Fatalf("repair Commit: %v", err)
	}
	assertState(t, "after the repair", readState(t, s, k), withIntent(commitState(c3), in))
	// So does a commit between the two versions.
	r, _ = mustAcquire(t, s, k, "w2", longTTL)
	c4 := store.Commit{Version: 4, RemoteID: "r4", Event: eventBytes(k, 4)}
	if err := s.Commit(ctxFor(t), r, c4); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertState(t, "after a commit below the intent", readState(t, s, k), withIntent(commitState(c4), in))
	// The newer version's retry lands and clears it.
	l2, st := mustAcquireVersion(t, s, k, "w1", longTTL, 5)
	assertState(t, "returned to the retry", st, withIntent(commitState(c4), in))
	c5 := store.Commit{Version: 5, RemoteID: "r5", Event: eventBytes(k, 5)}
	if err := s.Commit(ctxFor(t), l2, c5); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	assertState(t, "after the retry's commit", readState(t, s, k), commitState(c5))
	// A commit under a lost lease leaves the intent alone.
	l3, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 6)
	mustRelease(t, s, l3)
	in6 := readState(t, s, k).Intent
	err := s.Commit(ctxFor(t), l3, store.Commit{Version: 6, RemoteID: "zombie", Event: eventBytes(k, 6)})
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit under a lost lease = %v, want ErrFenced", err)
	}
	assertState(t, "after a fenced commit", readState(t, s, k), withIntent(commitState(c5), in6))
}
