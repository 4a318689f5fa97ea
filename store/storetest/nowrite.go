package storetest

import (
	"fmt"
	"testing"

	"github.com/eventsync/eventsync/store"
)

// expectNoLease expects an Acquire of version to take no lease (nothing to
// write) and returns the state it answered with.
func expectNoLease(t *testing.T, s store.Store, k store.Key, owner string, version int64) store.State {
	t.Helper()
	l, st, err := s.Acquire(ctxFor(t), k, owner, longTTL, version)
	if err != nil {
		t.Fatalf("Acquire(%s, %q, version %d) with nothing to write: %v, want no error", k, owner, version, err)
	}
	if l.Held() || l.Token != 0 {
		t.Fatalf("Acquire(%s, %q, version %d) with nothing to write took a lease (token %d), want none", k, owner, version, l.Token)
	}
	if l.Key != k || l.Owner != owner {
		t.Errorf("Acquire(%s, %q) answered for %s owned by %q", k, owner, l.Key, l.Owner)
	}
	return st
}

// mustCommit commits version under l and returns the commit.
func mustCommit(t *testing.T, s store.Store, l store.Lease, version int64) store.Commit {
	t.Helper()
	c := store.Commit{Version: version, RemoteID: fmt.Sprintf("r%d", version), Event: eventBytes(l.Key, version)}
	if err := s.Commit(ctxFor(t), l, c); err != nil {
		t.Fatalf("Commit(%s token %d, version %d): %v", l.Key, l.Token, version, err)
	}
	return c
}

// A duplicate or stale event's Acquire answers with the state and takes no
// lease: the key stays free, no token is spent, nothing changes, and the
// caller has no lease to give back.
func testAcquireNothingToWriteTakesNoLease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "nowrite", Key: "free"}
	l, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 5)
	c := mustCommit(t, s, l, 5)
	for _, v := range []int64{5, 3, 1} {
		assertState(t, "answer to an event not above the applied version", expectNoLease(t, s, k, "w2", v), commitState(c))
	}
	// Free at once for a newer version, whose token follows the last
	// lease's: the lease-less answers spent none.
	l2, st := mustAcquireVersion(t, s, k, "w3", longTTL, 6)
	assertState(t, "state after lease-less answers", st, commitState(c))
	if l2.Token <= l.Token {
		t.Errorf("token after lease-less answers = %d, want > %d", l2.Token, l.Token)
	}
	mustRelease(t, s, l2)
	// A key never seen has something to write at any version.
	fresh := store.Key{Entity: "nowrite", Key: "fresh"}
	l3, _ := mustAcquireVersion(t, s, fresh, "w1", longTTL, 1)
	mustRelease(t, s, l3)
}

// Whoever holds the key, an event with nothing to write is answered (not
// ErrLocked), and the holder's lease and intent are left as they are: a
// stale one is below the applied version, a superseded one below the
// holder's write in doubt. An event with something to write still waits.
func testAcquireNothingToWriteWhileLocked(t *testing.T, s store.Store) {
	k := store.Key{Entity: "nowrite", Key: "locked"}
	c := commitVersion(t, s, k, 3)
	holder, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 6)
	stale := expectNoLease(t, s, k, "w2", 2)
	checkIntent(t, "stale event's answer", stale.Intent, 6, holder.Token, 0)
	assertState(t, "stale event's answer", stale, withIntent(commitState(c), stale.Intent))
	superseded := expectNoLease(t, s, k, "w2", 5)
	assertState(t, "superseded event's answer", superseded, withIntent(commitState(c), stale.Intent))
	expectLockedVersion(t, s, k, "w2", 7)
	expectLocked(t, s, k, "w3")
	// The holder's lease stood throughout: it commits.
	c6 := mustCommit(t, s, holder, 6)
	assertState(t, "after the holder's commit", readState(t, s, k), commitState(c6))
}

// On a key flagged for repair every event takes the lease, and waits while
// another owner holds it: a stale or duplicate one has something to write
// (the newest state again), and a superseded one may be the retry of the
// zombie that set the flag during the holder's lease, which must not be
// settled while that holder still writes (see store.NothingToWrite).
func testAcquireForARepairTakesTheLease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "nowrite", Key: "repair"}
	commitVersion(t, s, k, 4)
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair: %v", err)
	}
	l, st := mustAcquireVersion(t, s, k, "w1", longTTL, 2)
	if !st.RepairNeeded {
		t.Fatalf("RepairNeeded = false after MarkRepair")
	}
	expectLockedVersion(t, s, k, "w2", 4)
	mustRelease(t, s, l)
	l, _ = mustAcquireVersion(t, s, k, "w1", longTTL, 4)
	mustRelease(t, s, l)
	// Below a newer write in doubt, held by another owner or not.
	l, _ = mustAcquireVersion(t, s, k, "w1", longTTL, 8)
	expectLockedVersion(t, s, k, "w2", 6)
	mustRelease(t, s, l)
	l, st = mustAcquireVersion(t, s, k, "w2", longTTL, 6)
	if !st.RepairNeeded || st.Intent == nil || st.Intent.Version != 8 {
		t.Errorf("superseded event's state: repair %t, intent %+v; want the flag and intent 8", st.RepairNeeded, st.Intent)
	}
	mustRelease(t, s, l)
}
