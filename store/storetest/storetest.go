// Package storetest is the conformance suite every state-store adapter must
// pass. An adapter's test calls Run with a constructor that returns a fresh,
// isolated store (own schema, key prefix or bucket) and registers its cleanup:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openIsolated(t) })
//	}
//
// The suite checks the contracts documented in package store: monotonic
// fencing tokens, lease expiry and takeover, fenced writes, stale-commit
// rejection, the write in doubt (the intent Acquire records, its failure
// count and when Commit clears it), no lease for an event with nothing to
// write (one round trip for a duplicate, stale or superseded event),
// repair flags, scans and the control
// space, plus a race of many goroutines over one key that must never let two
// holders overlap.
//
// Two points the port leaves implicit are pinned down here so adapters agree:
// fencing compares tokens only, so a lease that expired while nobody else
// acquired the key can still commit; and Scan stops at the first error its
// callback returns and returns that error; and a released lease is no longer
// held, so ReleaseFailed of a lease released already counts nothing (a
// retried call must not count one failure twice). Release and ReleaseFailed
// report a lost lease (another owner acquired the key since) as ErrFenced,
// and only that: the engine flags the key for repair on it.
// Subtests run in parallel and wait for leases of a few hundred milliseconds,
// so one run takes a few seconds.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
)

// shortTTL is long enough to survive a round trip on a loaded CI machine and
// short enough that waiting for expiry keeps the suite fast.
const shortTTL = 300 * time.Millisecond

// longTTL is for leases that must not expire during a subtest.
const longTTL = 30 * time.Second

// expiryDeadline bounds how long the suite waits for a short lease or a
// control record to expire, tolerating coarse clocks and slow machines.
const expiryDeadline = 5 * time.Second

// Run runs the conformance suite. newStore must return a fresh store that
// shares no keys or control records with any other store it returned, and
// must register its own cleanup (t.Cleanup) that closes it and removes its
// data.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"AcquireNewKey", testAcquireNewKey},
		{"AcquireLockedByOther", testAcquireLockedByOther},
		{"AcquireAfterExpiry", testAcquireAfterExpiry},
		{"ReacquireOwnLease", testReacquireOwnLease},
		{"TokensIncreaseForever", testTokensIncreaseForever},
		{"CommitStoresStateAndReleases", testCommitStoresStateAndReleases},
		{"CommitFenced", testCommitFenced},
		{"CommitAfterExpiryWithoutTakeover", testCommitAfterExpiryWithoutTakeover},
		{"CommitStale", testCommitStale},
		{"CommitSameVersion", testCommitSameVersion},
		{"CommitTombstone", testCommitTombstone},
		{"AcquireRecordsIntent", testAcquireRecordsIntent},
		{"AcquireReturnsPreviousIntent", testAcquireReturnsPreviousIntent},
		{"AcquireVersionZeroRecordsNothing", testAcquireVersionZeroRecordsNothing},
		{"AcquireOlderVersionKeepsIntent", testAcquireOlderVersionKeepsIntent},
		{"AcquireSameVersionKeepsIntent", testAcquireSameVersionKeepsIntent},
		{"AcquireLockedRecordsNothing", testAcquireLockedRecordsNothing},
		{"AcquireNothingToWriteTakesNoLease", testAcquireNothingToWriteTakesNoLease},
		{"AcquireNothingToWriteWhileLocked", testAcquireNothingToWriteWhileLocked},
		{"AcquireForARepairTakesTheLease", testAcquireForARepairTakesTheLease},
		{"ReleaseFailedCountsFailures", testReleaseFailedCountsFailures},
		{"ReleaseFailedFenced", testReleaseFailedFenced},
		{"CommitClearsIntentAtOrBelowItsVersion", testCommitClearsIntentAtOrBelow},
		{"CommitKeepsNewerIntent", testCommitKeepsNewerIntent},
		{"Extend", testExtend},
		{"ExtendFenced", testExtendFenced},
		{"Release", testRelease},
		{"ReleaseLostLease", testReleaseLostLease},
		{"ReleaseAfterExpiryWithoutTakeover", testReleaseAfterExpiryWithoutTakeover},
		{"MarkRepair", testMarkRepair},
		{"MarkRepairDuringALeaseSurvivesItsCommit", testMarkRepairDuringALease},
		{"Scan", testScan},
		{"ScanStopsOnError", testScanStopsOnError},
		{"OddKeys", testOddKeys},
		{"KeysAreIndependent", testKeysAreIndependent},
		{"CanceledContext", testCanceledContext},
		{"ControlSetGetDelete", testControlSetGetDelete},
		{"ControlList", testControlList},
		{"ControlExpiry", testControlExpiry},
		{"ConcurrentHolders", testConcurrentHolders},
		{"ConcurrentKeysStayApart", testConcurrentKeysStayApart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustAcquire takes a lease to look (version 0: records no intent).
func mustAcquire(t *testing.T, s store.Store, k store.Key, owner string, ttl time.Duration) (store.Lease, store.State) {
	t.Helper()
	return mustAcquireVersion(t, s, k, owner, ttl, 0)
}

// mustAcquireVersion takes a lease to write version.
func mustAcquireVersion(t *testing.T, s store.Store, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State) {
	t.Helper()
	l, st, err := s.Acquire(ctxFor(t), k, owner, ttl, version)
	if err != nil {
		t.Fatalf("Acquire(%s, %q, version %d): %v", k, owner, version, err)
	}
	if l.Key != k || l.Owner != owner {
		t.Fatalf("Acquire(%s, %q) returned lease for %s owned by %q", k, owner, l.Key, l.Owner)
	}
	if l.Token < 1 {
		t.Fatalf("Acquire(%s, %q) returned token %d, want >= 1", k, owner, l.Token)
	}
	if l.Expires.IsZero() {
		t.Fatalf("Acquire(%s, %q) returned a lease without expiry", k, owner)
	}
	return l, st
}

// acquireWhenExpired retries Acquire (version 0) until the current lease
// expires.
func acquireWhenExpired(t *testing.T, s store.Store, k store.Key, owner string, ttl time.Duration) (store.Lease, store.State) {
	t.Helper()
	return acquireVersionWhenExpired(t, s, k, owner, ttl, 0)
}

// acquireVersionWhenExpired retries Acquire of version until the current
// lease expires.
func acquireVersionWhenExpired(t *testing.T, s store.Store, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State) {
	t.Helper()
	deadline := time.Now().Add(expiryDeadline)
	for {
		l, st, err := s.Acquire(ctxFor(t), k, owner, ttl, version)
		if err == nil {
			return l, st
		}
		var locked *store.LockedError
		if !errors.As(err, &locked) {
			t.Fatalf("Acquire(%s, %q) while waiting for expiry: %v", k, owner, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease on %s did not expire within %s (RetryAfter %s)", k, expiryDeadline, locked.RetryAfter)
		}
		time.Sleep(min(max(locked.RetryAfter, 5*time.Millisecond), 100*time.Millisecond))
	}
}

func expectLocked(t *testing.T, s store.Store, k store.Key, owner string) *store.LockedError {
	t.Helper()
	return expectLockedVersion(t, s, k, owner, 0)
}

// expectLockedVersion expects an Acquire of version to find k locked.
func expectLockedVersion(t *testing.T, s store.Store, k store.Key, owner string, version int64) *store.LockedError {
	t.Helper()
	_, _, err := s.Acquire(ctxFor(t), k, owner, longTTL, version)
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("Acquire(%s, %q) = %v, want ErrLocked", k, owner, err)
	}
	var locked *store.LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("Acquire(%s, %q) error %T is not a *store.LockedError", k, owner, err)
	}
	if locked.Key != k {
		t.Errorf("LockedError.Key = %s, want %s", locked.Key, k)
	}
	return locked
}

func assertState(t *testing.T, what string, got, want store.State) {
	t.Helper()
	if got.AppliedVersion != want.AppliedVersion || got.RemoteID != want.RemoteID ||
		got.Deleted != want.Deleted || got.RepairNeeded != want.RepairNeeded ||
		!bytes.Equal(got.LastEvent, want.LastEvent) {
		t.Errorf("%s: state = {version %d remote %q deleted %v repair %v event %q}, want {version %d remote %q deleted %v repair %v event %q}",
			what, got.AppliedVersion, got.RemoteID, got.Deleted, got.RepairNeeded, got.LastEvent,
			want.AppliedVersion, want.RemoteID, want.Deleted, want.RepairNeeded, want.LastEvent)
	}
	switch {
	case got.Intent == nil && want.Intent == nil:
	case got.Intent == nil || want.Intent == nil:
		t.Errorf("%s: intent = %+v, want %+v", what, got.Intent, want.Intent)
	default:
		g, w := *got.Intent, *want.Intent
		if g.Version != w.Version || g.Token != w.Token || g.Failures != w.Failures || !g.At.Equal(w.At) {
			t.Errorf("%s: intent = %+v, want %+v", what, g, w)
		}
	}
}

// commitState is the state a successful commit of c leaves behind.
func commitState(c store.Commit) store.State {
	return store.State{AppliedVersion: c.Version, RemoteID: c.RemoteID, Deleted: c.Deleted, LastEvent: c.Event}
}

func eventBytes(k store.Key, version int64) []byte {
	// Spaces and key order matter: a store must keep the bytes as given,
	// not re-encode them.
	return fmt.Appendf(nil, `{"version": %d,  "key": %q, "entity": %q, "op": "upsert", "data": {"b": 1, "a": 2}}`, version, k.Key, k.Entity)
}

func commitVersion(t *testing.T, s store.Store, k store.Key, version int64) store.Commit {
	t.Helper()
	l, _ := mustAcquire(t, s, k, "committer", longTTL)
	c := store.Commit{Version: version, RemoteID: fmt.Sprintf("r-%s-%d", k.Key, version), Event: eventBytes(k, version)}
	if err := s.Commit(ctxFor(t), l, c); err != nil {
		t.Fatalf("Commit(%s, version %d): %v", k, version, err)
	}
	return c
}

func testAcquireNewKey(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "new-1"}
	_, st := mustAcquire(t, s, k, "w1", longTTL)
	assertState(t, "new key", st, store.State{})
}

func testAcquireLockedByOther(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "locked"}
	ttl := 5 * time.Second
	mustAcquire(t, s, k, "w1", ttl)
	locked := expectLocked(t, s, k, "w2")
	if locked.RetryAfter <= ttl/2 || locked.RetryAfter > ttl+time.Second {
		t.Errorf("RetryAfter = %s, want about the remaining ttl (%s)", locked.RetryAfter, ttl)
	}
}

func testAcquireAfterExpiry(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "expiring"}
	l1, _ := mustAcquire(t, s, k, "w1", shortTTL)
	locked := expectLocked(t, s, k, "w2")
	if locked.RetryAfter <= 0 || locked.RetryAfter > shortTTL+100*time.Millisecond {
		t.Errorf("RetryAfter = %s, want in (0, %s]", locked.RetryAfter, shortTTL)
	}
	l2, _ := acquireWhenExpired(t, s, k, "w2", longTTL)
	if l2.Token <= l1.Token {
		t.Errorf("token after takeover = %d, want > %d", l2.Token, l1.Token)
	}
	if l2.Owner != "w2" {
		t.Errorf("owner after takeover = %q, want w2", l2.Owner)
	}
	expectLocked(t, s, k, "w1")
}

func testReacquireOwnLease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "reacquire"}
	l1, _ := mustAcquire(t, s, k, "w1", longTTL)
	l2, _ := mustAcquire(t, s, k, "w1", longTTL)
	if l2.Token <= l1.Token {
		t.Fatalf("re-acquired token = %d, want > %d", l2.Token, l1.Token)
	}
	// The first lease is superseded by the second even for the same owner.
	err := s.Commit(ctxFor(t), l1, store.Commit{Version: 1, RemoteID: "r", Event: eventBytes(k, 1)})
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit with superseded token of the same owner = %v, want ErrFenced", err)
	}
	if err := s.Commit(ctxFor(t), l2, store.Commit{Version: 1, RemoteID: "r", Event: eventBytes(k, 1)}); err != nil {
		t.Fatalf("Commit with current token: %v", err)
	}
}

func testTokensIncreaseForever(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "tokens"}
	var last int64
	check := func(what string, l store.Lease) {
		t.Helper()
		if l.Token <= last {
			t.Fatalf("%s: token %d, want > %d", what, l.Token, last)
		}
		last = l.Token
	}
	for i := range 3 {
		l, _ := mustAcquire(t, s, k, "w1", longTTL)
		check("acquire before commit", l)
		if err := s.Commit(ctxFor(t), l, store.Commit{Version: int64(i + 1), Event: eventBytes(k, int64(i+1))}); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		l, _ = mustAcquire(t, s, k, fmt.Sprintf("w%d", i+2), longTTL)
		check("acquire after commit released", l)
		if err := s.Release(ctxFor(t), l); err != nil {
			t.Fatalf("Release: %v", err)
		}
		l, _ = mustAcquire(t, s, k, "w1", longTTL)
		check("acquire after release", l)
		if err := s.Release(ctxFor(t), l); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
}

func testCommitStoresStateAndReleases(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "commit"}
	// A flag set before the lease was taken is the holder's to clear.
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair: %v", err)
	}
	l, _ := mustAcquireVersion(t, s, k, "w1", longTTL, 7)
	c := store.Commit{Version: 7, RemoteID: "remote-7", Event: eventBytes(k, 7)}
	if err := s.Commit(ctxFor(t), l, c); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	// Commit released the lease: another owner acquires at once and sees
	// the committed state with intent and repair flag cleared.
	l2, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after commit", st, commitState(c))
	if l2.Token <= l.Token {
		t.Errorf("token after commit = %d, want > %d", l2.Token, l.Token)
	}
	// A later commit overwrites every field.
	c2 := store.Commit{Version: 9, RemoteID: "remote-9", Event: eventBytes(k, 9)}
	if err := s.Commit(ctxFor(t), l2, c2); err != nil {
		t.Fatalf("second Commit: %v", err)
	}
	_, st = mustAcquire(t, s, k, "w3", longTTL)
	assertState(t, "after second commit", st, commitState(c2))
}

func testCommitFenced(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "fenced"}
	c1 := commitVersion(t, s, k, 3)
	old, _ := mustAcquire(t, s, k, "w1", shortTTL)
	cur, _ := acquireWhenExpired(t, s, k, "w2", longTTL)
	err := s.Commit(ctxFor(t), old, store.Commit{Version: 4, RemoteID: "zombie", Event: eventBytes(k, 4)})
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Commit with superseded token = %v, want ErrFenced", err)
	}
	// The fenced commit changed nothing and did not release w2's lease.
	expectLocked(t, s, k, "w3")
	if err := s.Release(ctxFor(t), cur); err != nil {
		t.Fatalf("Release: %v", err)
	}
	_, st := mustAcquire(t, s, k, "w3", longTTL)
	assertState(t, "after fenced commit", st, commitState(c1))
}

// Fencing compares tokens: a lease that expired while nobody else acquired
// the key still holds the newest token, so its commit is safe and succeeds.
func testCommitAfterExpiryWithoutTakeover(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "expired-not-taken"}
	l, _ := mustAcquire(t, s, k, "w1", shortTTL)
	time.Sleep(shortTTL + 100*time.Millisecond)
	c := store.Commit{Version: 1, RemoteID: "r1", Event: eventBytes(k, 1)}
	if err := s.Commit(ctxFor(t), l, c); err != nil {
		t.Fatalf("Commit after expiry without takeover: %v", err)
	}
	_, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after late commit", st, commitState(c))
}

func testCommitStale(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "stale"}
	c := commitVersion(t, s, k, 5)
	for _, v := range []int64{4, 1} {
		l, _ := mustAcquire(t, s, k, "w1", longTTL)
		err := s.Commit(ctxFor(t), l, store.Commit{Version: v, RemoteID: "stale", Event: eventBytes(k, v)})
		if !errors.Is(err, store.ErrStaleCommit) {
			t.Fatalf("Commit version %d over applied 5 = %v, want ErrStaleCommit", v, err)
		}
		if err := s.Release(ctxFor(t), l); err != nil {
			t.Fatalf("Release: %v", err)
		}
	}
	_, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after stale commits", st, commitState(c))
}

// A repair re-applies the applied version: committing an equal version is
// allowed, stores the commit and clears the repair flag.
func testCommitSameVersion(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "same-version"}
	commitVersion(t, s, k, 5)
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair: %v", err)
	}
	l, st := mustAcquire(t, s, k, "repairer", longTTL)
	if !st.RepairNeeded {
		t.Fatalf("RepairNeeded = false after MarkRepair")
	}
	c := store.Commit{Version: 5, RemoteID: "repaired", Event: eventBytes(k, 5)}
	if err := s.Commit(ctxFor(t), l, c); err != nil {
		t.Fatalf("Commit of the applied version (repair) = %v, want nil", err)
	}
	_, st = mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after repair commit", st, commitState(c))
}

func testCommitTombstone(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "tombstone"}
	commitVersion(t, s, k, 1)
	l, _ := mustAcquire(t, s, k, "w1", longTTL)
	del := store.Commit{Version: 2, RemoteID: "r-tombstone-1", Deleted: true, Event: []byte(`{"op":"delete"}`)}
	if err := s.Commit(ctxFor(t), l, del); err != nil {
		t.Fatalf("Commit tombstone: %v", err)
	}
	l, st := mustAcquire(t, s, k, "w1", longTTL)
	assertState(t, "after tombstone", st, commitState(del))
	// Resurrection by a newer upsert clears the tombstone; an empty event
	// and remote id are stored as such.
	up := store.Commit{Version: 3}
	if err := s.Commit(ctxFor(t), l, up); err != nil {
		t.Fatalf("Commit after tombstone: %v", err)
	}
	_, st = mustAcquire(t, s, k, "w1", longTTL)
	assertState(t, "after resurrection", st, commitState(up))
}

func testExtend(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "extend"}
	l, _ := mustAcquire(t, s, k, "w1", shortTTL)
	ext, err := s.Extend(ctxFor(t), l, 5*time.Second)
	if err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if ext.Token != l.Token || ext.Key != l.Key || ext.Owner != l.Owner {
		t.Errorf("Extend changed the lease identity: %+v -> %+v", l, ext)
	}
	if !ext.Expires.After(l.Expires) {
		t.Errorf("Extend: expires %s, want after %s", ext.Expires, l.Expires)
	}
	// Well past the original ttl the lease is still held.
	time.Sleep(shortTTL + 200*time.Millisecond)
	locked := expectLocked(t, s, k, "w2")
	if locked.RetryAfter < 2*time.Second {
		t.Errorf("RetryAfter after Extend = %s, want about 4.5s", locked.RetryAfter)
	}
	// The extended lease still commits.
	if err := s.Commit(ctxFor(t), ext, store.Commit{Version: 1, Event: eventBytes(k, 1)}); err != nil {
		t.Fatalf("Commit after Extend: %v", err)
	}
}

func testExtendFenced(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "extend-fenced"}
	old, _ := mustAcquire(t, s, k, "w1", shortTTL)
	cur, _ := acquireWhenExpired(t, s, k, "w2", 2*time.Second)
	if _, err := s.Extend(ctxFor(t), old, longTTL); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Extend with superseded token = %v, want ErrFenced", err)
	}
	// The fenced Extend did not prolong w2's lease past its own 2s ttl.
	locked := expectLocked(t, s, k, "w3")
	if locked.RetryAfter > 2*time.Second+100*time.Millisecond {
		t.Errorf("RetryAfter = %s after a fenced Extend, want <= 2s", locked.RetryAfter)
	}
	if err := s.Release(ctxFor(t), cur); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func testRelease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "release"}
	c := commitVersion(t, s, k, 1)
	l, _ := mustAcquire(t, s, k, "w1", longTTL)
	if err := s.Release(ctxFor(t), l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Released: another owner acquires at once; state is unchanged.
	_, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after release", st, commitState(c))
}

// A holder learns from its release that its lease was lost: a write it
// sent may have landed after the new holder's, and only it can flag the
// key for repair.
func testReleaseLostLease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "release-lost"}
	old, _ := mustAcquire(t, s, k, "w1", shortTTL)
	cur, _ := acquireWhenExpired(t, s, k, "w2", longTTL)
	if err := s.Release(ctxFor(t), old); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Release of a lost lease = %v, want ErrFenced", err)
	}
	// w2 still holds the key.
	expectLocked(t, s, k, "w3")
	expectLocked(t, s, k, "w1")
	// Releasing twice is also harmless.
	if err := s.Release(ctxFor(t), cur); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := s.Release(ctxFor(t), cur); err != nil {
		t.Fatalf("second Release = %v, want nil", err)
	}
	mustAcquire(t, s, k, "w3", longTTL)
	// Once another owner acquired the key, w2's lease is lost too, even
	// though w2 released it first.
	if err := s.Release(ctxFor(t), cur); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Release after a later owner acquired the key = %v, want ErrFenced", err)
	}
}

// Fencing compares tokens: a lease that expired while nobody else acquired
// the key was never lost, and releasing it, or releasing it again (a
// retried call), is no error.
func testReleaseAfterExpiryWithoutTakeover(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "release-expired-not-taken"}
	for _, failed := range []bool{false, true} {
		release, name := s.Release, "Release"
		if failed {
			release, name = s.ReleaseFailed, "ReleaseFailed"
		}
		l, _ := mustAcquire(t, s, k, "w1", shortTTL)
		time.Sleep(shortTTL + 100*time.Millisecond)
		for _, what := range []string{"after expiry without takeover", "again"} {
			if err := release(ctxFor(t), l); err != nil {
				t.Fatalf("%s %s = %v, want nil", name, what, err)
			}
		}
	}
}

func testMarkRepair(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "repair"}
	c := commitVersion(t, s, k, 4)
	// The zombie lost its lease; the current holder is someone else.
	cur, _ := mustAcquire(t, s, k, "w2", longTTL)
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair while another owner holds the lease: %v", err)
	}
	// Marking did not steal or release the lease.
	expectLocked(t, s, k, "w3")
	if err := s.Release(ctxFor(t), cur); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l, st := mustAcquire(t, s, k, "w3", longTTL)
	want := commitState(c)
	want.RepairNeeded = true
	assertState(t, "after MarkRepair", st, want)
	// Marking twice is idempotent; a release keeps the flag; a commit
	// clears it.
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("second MarkRepair: %v", err)
	}
	if err := s.Release(ctxFor(t), l); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l, st = mustAcquire(t, s, k, "w3", longTTL)
	assertState(t, "after second MarkRepair and release", st, want)
	c2 := store.Commit{Version: 5, RemoteID: c.RemoteID, Event: eventBytes(k, 5)}
	if err := s.Commit(ctxFor(t), l, c2); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	_, st = mustAcquire(t, s, k, "w4", longTTL)
	assertState(t, "after repair commit", st, commitState(c2))
}

// A zombie's write may land after the current holder's: the flag it sets
// while that holder has the lease must outlive the holder's commit, or the
// zombie's stale data stays on the API for good. The next holder saw the
// flag when it acquired, so its commit clears it.
func testMarkRepairDuringALease(t *testing.T, s store.Store) {
	k := store.Key{Entity: "listing", Key: "repair-during"}
	c := commitVersion(t, s, k, 3)
	l, st := mustAcquire(t, s, k, "holder", longTTL)
	assertState(t, "before the zombie", st, commitState(c))
	if err := s.MarkRepair(ctxFor(t), k); err != nil {
		t.Fatalf("MarkRepair: %v", err)
	}
	c4 := store.Commit{Version: 4, RemoteID: c.RemoteID, Event: eventBytes(k, 4)}
	if err := s.Commit(ctxFor(t), l, c4); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	l, st = mustAcquire(t, s, k, "next", longTTL)
	want := commitState(c4)
	want.RepairNeeded = true
	assertState(t, "after a commit by the holder the zombie raced", st, want)
	if err := s.Commit(ctxFor(t), l, c4); err != nil {
		t.Fatalf("repair Commit: %v", err)
	}
	_, st = mustAcquire(t, s, k, "last", longTTL)
	assertState(t, "after the repair commit", st, commitState(c4))
}

func testScan(t *testing.T, s store.Store) {
	// Entities sharing a prefix, and keys that look like entity/key joins,
	// must not leak into each other's scans.
	want := map[store.Key]store.Commit{}
	others := []store.Key{
		{Entity: "listingx", Key: "a"},
		{Entity: "listing/a", Key: "b"},
		{Entity: "host", Key: "listing"},
		{Entity: "lis", Key: "ting"},
	}
	for i, key := range []string{"a", "b", "a/b", "with space", "ünï", "x:y", "listingx"} {
		k := store.Key{Entity: "listing", Key: key}
		want[k] = commitVersion(t, s, k, int64(i+1))
	}
	for _, k := range others {
		commitVersion(t, s, k, 1)
	}
	got := map[store.Key]store.State{}
	err := s.Scan(ctxFor(t), "listing", func(k store.Key, st store.State) error {
		if _, dup := got[k]; dup {
			return fmt.Errorf("key %s visited twice", k)
		}
		got[k] = st
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("Scan visited %d keys %v, want %d", len(got), sortedKeys(got), len(want))
	}
	for k, c := range want {
		st, ok := got[k]
		if !ok {
			t.Errorf("Scan missed %s", k)
			continue
		}
		assertState(t, "Scan "+k.String(), st, commitState(c))
	}
	// An unknown entity visits nothing.
	err = s.Scan(ctxFor(t), "nothing", func(k store.Key, _ store.State) error {
		return fmt.Errorf("visited %s of an unknown entity", k)
	})
	if err != nil {
		t.Fatalf("Scan of unknown entity: %v", err)
	}
}

func testScanStopsOnError(t *testing.T, s store.Store) {
	for i := range 5 {
		commitVersion(t, s, store.Key{Entity: "booking", Key: fmt.Sprint(i)}, 1)
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.Scan(ctxFor(t), "booking", func(store.Key, store.State) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Scan returned %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("Scan called fn %d times after it failed, want 1", calls)
	}
}

func sortedKeys(m map[store.Key]store.State) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

func testOddKeys(t *testing.T, s store.Store) {
	odd := []store.Key{
		{Entity: "listing", Key: "with space"},
		{Entity: "listing", Key: "a/b/c"},
		{Entity: "listing", Key: "ключ-ü-日本"},
		{Entity: "listing", Key: "x:y:z"},
		{Entity: "listing", Key: "{braces}"},
		{Entity: "listing", Key: `quote'"\`},
		{Entity: "listing", Key: "*?[]%_"},
		{Entity: "odd entity/ü:", Key: "k"},
	}
	for i, k := range odd {
		l, st := mustAcquire(t, s, k, "owner with space/ü", longTTL)
		assertState(t, "fresh "+k.String(), st, store.State{})
		c := store.Commit{Version: int64(i + 10), RemoteID: "rid " + k.Key, Event: eventBytes(k, int64(i+10))}
		if err := s.Commit(ctxFor(t), l, c); err != nil {
			t.Fatalf("Commit(%q): %v", k, err)
		}
		_, st = mustAcquire(t, s, k, "w2", longTTL)
		assertState(t, "odd key "+k.String(), st, commitState(c))
	}
	seen := 0
	err := s.Scan(ctxFor(t), "odd entity/ü:", func(k store.Key, _ store.State) error {
		if k != odd[len(odd)-1] {
			return fmt.Errorf("unexpected key %q", k)
		}
		seen++
		return nil
	})
	if err != nil || seen != 1 {
		t.Fatalf("Scan of odd entity: %d keys, %v; want 1, nil", seen, err)
	}
}

func testKeysAreIndependent(t *testing.T, s store.Store) {
	a := store.Key{Entity: "listing", Key: "1"}
	b := store.Key{Entity: "host", Key: "1"}
	la, _ := mustAcquire(t, s, a, "w1", longTTL)
	// Another key, even with the same Key string, is free.
	lb, _ := mustAcquire(t, s, b, "w2", longTTL)
	ca := store.Commit{Version: 2, RemoteID: "ra", Event: eventBytes(a, 2)}
	if err := s.Commit(ctxFor(t), la, ca); err != nil {
		t.Fatalf("Commit a: %v", err)
	}
	if err := s.Release(ctxFor(t), lb); err != nil {
		t.Fatalf("Release b: %v", err)
	}
	_, st := mustAcquire(t, s, b, "w3", longTTL)
	assertState(t, "other key", st, store.State{})
	_, st = mustAcquire(t, s, a, "w3", longTTL)
	assertState(t, "committed key", st, commitState(ca))
}

func testCanceledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := store.Key{Entity: "listing", Key: "canceled"}
	if _, _, err := s.Acquire(ctx, k, "w1", longTTL, 3); err == nil || errors.Is(err, store.ErrLocked) {
		t.Errorf("Acquire with canceled context = %v, want a context error", err)
	}
	if err := s.SetControl(ctx, "x", []byte("y"), 0); err == nil {
		t.Errorf("SetControl with canceled context succeeded")
	}
	// The store still works afterwards, and the failed Acquire took no
	// lease and recorded no intent.
	_, st := mustAcquire(t, s, k, "w2", longTTL)
	assertState(t, "after an Acquire with a canceled context", st, store.State{})
}

func testControlSetGetDelete(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	if _, ok, err := s.GetControl(ctx, "pause/live"); err != nil || ok {
		t.Fatalf("GetControl of a missing record = ok %v, err %v; want false, nil", ok, err)
	}
	names := []string{"pause/live", "with space", "ü:ключ", "a%b_c", "{tag}"}
	for i, name := range names {
		if err := s.SetControl(ctx, name, []byte(fmt.Sprintf("v%d", i)), 0); err != nil {
			t.Fatalf("SetControl(%q): %v", name, err)
		}
	}
	for i, name := range names {
		v, ok, err := s.GetControl(ctx, name)
		if err != nil || !ok || string(v) != fmt.Sprintf("v%d", i) {
			t.Errorf("GetControl(%q) = %q, %v, %v; want v%d", name, v, ok, err, i)
		}
	}
	// Overwrite, including with an empty and a binary value.
	if err := s.SetControl(ctx, "pause/live", []byte{0, 1, 0xff}, 0); err != nil {
		t.Fatalf("SetControl overwrite: %v", err)
	}
	if v, ok, err := s.GetControl(ctx, "pause/live"); err != nil || !ok || !bytes.Equal(v, []byte{0, 1, 0xff}) {
		t.Errorf("GetControl after overwrite = %q, %v, %v", v, ok, err)
	}
	if err := s.SetControl(ctx, "empty", nil, 0); err != nil {
		t.Fatalf("SetControl empty: %v", err)
	}
	if v, ok, err := s.GetControl(ctx, "empty"); err != nil || !ok || len(v) != 0 {
		t.Errorf("GetControl(empty) = %q, %v, %v; want empty, true, nil", v, ok, err)
	}
	if err := s.DeleteControl(ctx, "pause/live"); err != nil {
		t.Fatalf("DeleteControl: %v", err)
	}
	if _, ok, err := s.GetControl(ctx, "pause/live"); err != nil || ok {
		t.Errorf("GetControl after delete = ok %v, err %v; want false, nil", ok, err)
	}
	if err := s.DeleteControl(ctx, "pause/live"); err != nil {
		t.Errorf("DeleteControl of a missing record = %v, want nil", err)
	}
	// Control records and entity state do not collide.
	k := store.Key{Entity: "with space", Key: "x"}
	mustAcquire(t, s, k, "w1", longTTL)
	if v, ok, err := s.GetControl(ctx, "with space"); err != nil || !ok || string(v) != "v1" {
		t.Errorf("GetControl after an Acquire of a similar key = %q, %v, %v", v, ok, err)
	}
}

func testControlList(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	records := map[string]string{
		"worker/a":      "1",
		"worker/b c":    "2",
		"worker/ü":      "3",
		"workers":       "4",
		"pause/live":    "5",
		"a_b":           "6",
		"axb":           "7",
		"a%":            "8",
		"a%b":           "9",
		"w*rker":        "10",
		"worker\\x":     "11",
		"worker/exp":    "12",
		"worker/{hash}": "13",
	}
	for name, v := range records {
		ttl := time.Duration(0)
		if name == "worker/a" {
			ttl = longTTL
		}
		if err := s.SetControl(ctx, name, []byte(v), ttl); err != nil {
			t.Fatalf("SetControl(%q): %v", name, err)
		}
	}
	if err := s.DeleteControl(ctx, "worker/exp"); err != nil {
		t.Fatalf("DeleteControl: %v", err)
	}
	delete(records, "worker/exp")
	cases := map[string][]string{
		"worker/": {"worker/a", "worker/b c", "worker/ü", "worker/{hash}"},
		"worker":  {"worker/a", "worker/b c", "worker/ü", "workers", "worker\\x", "worker/{hash}"},
		"a_":      {"a_b"},
		"a%":      {"a%", "a%b"},
		"w*":      {"w*rker"},
		"nothing": nil,
		"":        keysOf(records),
	}
	for prefix, names := range cases {
		got, err := s.ListControl(ctx, prefix)
		if err != nil {
			t.Fatalf("ListControl(%q): %v", prefix, err)
		}
		gotNames := make([]string, 0, len(got))
		for name, v := range got {
			gotNames = append(gotNames, name)
			if records[name] != string(v) {
				t.Errorf("ListControl(%q)[%q] = %q, want %q", prefix, name, v, records[name])
			}
		}
		sort.Strings(gotNames)
		sort.Strings(names)
		if fmt.Sprint(gotNames) != fmt.Sprint(names) {
			t.Errorf("ListControl(%q) = %q, want %q", prefix, gotNames, names)
		}
	}
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func testControlExpiry(t *testing.T, s store.Store) {
	ctx := ctxFor(t)
	if err := s.SetControl(ctx, "hb/short", []byte("x"), shortTTL); err != nil {
		t.Fatalf("SetControl: %v", err)
	}
	if err := s.SetControl(ctx, "hb/long", []byte("y"), longTTL); err != nil {
		t.Fatalf("SetControl: %v", err)
	}
	if err := s.SetControl(ctx, "hb/forever", []byte("z"), 0); err != nil {
		t.Fatalf("SetControl: %v", err)
	}
	if v, ok, err := s.GetControl(ctx, "hb/short"); err != nil || !ok || string(v) != "x" {
		t.Fatalf("GetControl before expiry = %q, %v, %v", v, ok, err)
	}
	deadline := time.Now().Add(expiryDeadline)
	for {
		_, ok, err := s.GetControl(ctx, "hb/short")
		if err != nil {
			t.Fatalf("GetControl: %v", err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control record with ttl %s still present after %s", shortTTL, expiryDeadline)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := s.ListControl(ctx, "hb/")
	if err != nil {
		t.Fatalf("ListControl: %v", err)
	}
	if len(got) != 2 || string(got["hb/long"]) != "y" || string(got["hb/forever"]) != "z" {
		t.Errorf("ListControl after expiry = %q, want hb/long and hb/forever only", got)
	}
	// Setting again without ttl removes the old expiry.
	if err := s.SetControl(ctx, "hb/long", []byte("y2"), 0); err != nil {
		t.Fatalf("SetControl: %v", err)
	}
	if err := s.SetControl(ctx, "hb/short", []byte("again"), 0); err != nil {
		t.Fatalf("SetControl: %v", err)
	}
	if v, ok, err := s.GetControl(ctx, "hb/short"); err != nil || !ok || string(v) != "again" {
		t.Errorf("GetControl of a re-set expired record = %q, %v, %v", v, ok, err)
	}
}

// testConcurrentHolders races goroutines for one key. Every holder checks it
// is alone (an in-lease atomic counter), that the applied version equals the
// number of commits so far, and commits version+1.
func testConcurrentHolders(t *testing.T, s store.Store) {
	const workers, iterations = 8, 12
	k := store.Key{Entity: "listing", Key: "contended"}
	var (
		inLease   atomic.Int32
		commits   atomic.Int64
		lastToken atomic.Int64
	)
	ctx := ctxFor(t)
	race(t, workers, iterations, func(w, _ int) error {
		owner := fmt.Sprintf("worker-%d", w)
		if err := holdOnce(ctx, s, k, owner, &inLease, &commits, &lastToken); err != nil {
			return fmt.Errorf("%s: %w", owner, err)
		}
		return nil
	})
	if t.Failed() {
		return
	}
	_, st := mustAcquire(t, s, k, "checker", longTTL)
	if st.AppliedVersion != commits.Load() || commits.Load() != workers*iterations {
		t.Errorf("applied version %d, successful commits %d, want both %d", st.AppliedVersion, commits.Load(), workers*iterations)
	}
}

func holdOnce(ctx context.Context, s store.Store, k store.Key, owner string, inLease *atomic.Int32, commits, lastToken *atomic.Int64) error {
	l, st, err := acquireWhenFree(ctx, s, k, owner, 0)
	if err != nil {
		return err
	}
	if n := inLease.Add(1); n != 1 {
		return fmt.Errorf("%d holders of %s at once", n, k)
	}
	if prev := lastToken.Swap(l.Token); l.Token <= prev {
		return fmt.Errorf("token %d after %d", l.Token, prev)
	}
	if st.AppliedVersion != commits.Load() {
		return fmt.Errorf("holder sees applied version %d after %d commits", st.AppliedVersion, commits.Load())
	}
	next := st.AppliedVersion + 1
	// Leave the lease before Commit releases it, so the next holder never
	// sees this one still counted.
	inLease.Add(-1)
	commits.Add(1)
	if err := s.Commit(ctx, l, store.Commit{Version: next, RemoteID: "r", Event: eventBytes(k, next)}); err != nil {
		return fmt.Errorf("Commit version %d: %w", next, err)
	}
	return nil
}

// acquireWhenFree acquires k to write version, trying again while another
// owner holds it.
func acquireWhenFree(ctx context.Context, s store.Store, k store.Key, owner string, version int64) (store.Lease, store.State, error) {
	for {
		l, st, err := s.Acquire(ctx, k, owner, longTTL, version)
		var locked *store.LockedError
		if !errors.As(err, &locked) {
			if err != nil {
				return l, st, fmt.Errorf("Acquire %s: %w", k, err)
			}
			return l, st, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// race runs fn(g, i) for iterations i in each of goroutines g at once; a
// goroutine stops at its first error, which fails the test.
func race(t *testing.T, goroutines, iterations int, fn func(g, i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range iterations {
				if err := fn(g, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// testConcurrentKeysStayApart races many goroutines over a few keys with
// every lease call a worker makes (acquire with and without an intent,
// commit, release, release after a failure), as a busy worker does. Stores
// that batch or pipeline calls must hand every caller its own key's result:
// each key's state must only ever hold what was done to that key, and count
// every commit and every failure made to it.
func testConcurrentKeysStayApart(t *testing.T, s store.Store) {
	const goroutines, keys, iterations = 24, 12, 40
	var commits, failures [keys]atomic.Int64
	ctx := ctxFor(t)
	race(t, goroutines, iterations, func(g, i int) error {
		n := (g*7 + i*5) % keys
		if err := touchKey(ctx, s, n, fmt.Sprintf("g%d-%d", g, i), i%5, &commits[n], &failures[n]); err != nil {
			return fmt.Errorf("goroutine %d iteration %d: %w", g, i, err)
		}
		return nil
	})
	if t.Failed() {
		return
	}
	for n := range keys {
		k := store.Key{Entity: "listing", Key: fmt.Sprintf("apart-%d", n)}
		_, st := mustAcquire(t, s, k, "checker", longTTL)
		if st.AppliedVersion != commits[n].Load() {
			t.Errorf("%s: applied version %d after %d commits", k, st.AppliedVersion, commits[n].Load())
		}
		if got := intentFailures(st); got != failures[n].Load() {
			t.Errorf("%s: %d failures counted, want %d", k, got, failures[n].Load())
		}
	}
}

func intentFailures(st store.State) int64 {
	if st.Intent == nil {
		return 0
	}
	return int64(st.Intent.Failures)
}

// touchKey takes key n's lease and, by mode, only releases it, records an
// intent and gives up (as a crash would), records an intent and commits,
// commits (a deletion every other version) without one, or records an
// intent and releases it as failed. commits counts the key's commits and
// failures the failures counted since the last one. It fails when the state
// it sees belongs to another key or is not what the calls before left.
func touchKey(ctx context.Context, s store.Store, n int, owner string, mode int, commits, failures *atomic.Int64) error {
	k := store.Key{Entity: "listing", Key: fmt.Sprintf("apart-%d", n)}
	// The version to write, guessed before the lease is held as the
	// engine's comes with its event: another commit may land first, and
	// then it is not above the applied version and records nothing.
	var version int64
	if mode == 1 || mode == 2 || mode == 4 {
		version = commits.Load() + 1
	}
	l, st, err := acquireWhenFree(ctx, s, k, owner, version)
	if err != nil {
		return err
	}
	if l.Key != k {
		return fmt.Errorf("Acquire %s returned a lease on %s", k, l.Key)
	}
	if !l.Held() {
		// Another commit landed first: version has nothing to write.
		if !store.NothingToWrite(version, st) {
			return fmt.Errorf("%s: no lease for version %d, which has something to write on applied version %d", k, version, st.AppliedVersion)
		}
		return nil
	}
	if st.AppliedVersion != commits.Load() {
		return fmt.Errorf("%s: holder sees applied version %d after %d commits", k, st.AppliedVersion, commits.Load())
	}
	if st.AppliedVersion > 0 && (st.RemoteID != "r-"+k.Key || !bytes.Equal(st.LastEvent, eventBytes(k, st.AppliedVersion))) {
		return fmt.Errorf("%s: state of another key or version: remote id %q, last event %s", k, st.RemoteID, st.LastEvent)
	}
	if st.Intent != nil && st.Intent.Version != st.AppliedVersion+1 {
		return fmt.Errorf("%s: intent for version %d left at applied version %d", k, st.Intent.Version, st.AppliedVersion)
	}
	if got := intentFailures(st); got != failures.Load() {
		return fmt.Errorf("%s: holder sees %d failures counted, want %d (intent %+v)", k, got, failures.Load(), st.Intent)
	}
	next := st.AppliedVersion + 1
	switch mode {
	case 0, 1: // change nothing, or give up after recording the intent
		return s.Release(ctx, l)
	case 4:
		// Count before the release lets the next holder look.
		if st.Intent != nil || version == next {
			failures.Add(1)
		}
		return s.ReleaseFailed(ctx, l)
	}
	commits.Add(1)
	failures.Store(0)
	c := store.Commit{Version: next, RemoteID: "r-" + k.Key, Deleted: mode == 3 && next%2 == 0, Event: eventBytes(k, next)}
	if err := s.Commit(ctx, l, c); err != nil {
		return fmt.Errorf("Commit %s version %d: %w", k, next, err)
	}
	return nil
}

var benchRuns atomic.Int64

// BenchmarkAcquireCommit measures one event's store cost, Acquire of the next
// version (recording it as the intent, as the engine does) followed by its
// Commit, from b.RunParallel goroutines working on
// distinct keys (as workers on a well-spread stream do). Like the engine, it
// keeps many events in flight: 32 goroutines per GOMAXPROCS, so a backend's
// group commit is exercised. It reports acquire+commit pairs per second as
// "events/s".
func BenchmarkAcquireCommit(b *testing.B, s store.Store) {
	const keysPerGoroutine = 512
	var goroutines atomic.Int64
	// The benchmark body runs several times on one store; fresh keys each run.
	run := benchRuns.Add(1)
	ctx := context.Background()
	start := time.Now()
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := goroutines.Add(1)
		owner := fmt.Sprintf("bench-%d-%d", run, g)
		versions := make([]int64, keysPerGoroutine)
		event := []byte(`{"id":"e","entity":"listing","key":"k","version":1,"op":"upsert","data":{"title":"benchmark"}}`)
		i := 0
		for pb.Next() {
			n := i % keysPerGoroutine
			i++
			k := store.Key{Entity: "listing", Key: fmt.Sprintf("%s-%d", owner, n)}
			l, _, err := s.Acquire(ctx, k, owner, 30*time.Second, versions[n]+1)
			if err != nil {
				b.Errorf("Acquire: %v", err)
				return
			}
			versions[n]++
			if err := s.Commit(ctx, l, store.Commit{Version: versions[n], RemoteID: "r", Event: event}); err != nil {
				b.Errorf("Commit: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
