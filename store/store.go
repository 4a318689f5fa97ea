// Package store defines the state-store port: per (entity, key) the applied
// version, the remote id, a pending intent, and a lease lock whose fencing
// token makes every commit fail once the lease was lost. It also holds the
// small control-plane records (pause flags, worker heartbeats) that every
// worker process on every machine shares. Adapters live in sub-packages
// (postgres, redis, natskv) and all pass the conformance suite in
// store/storetest.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Key identifies one entity in the source system.
type Key struct {
	Entity string
	Key    string
}

func (k Key) String() string { return k.Entity + "/" + k.Key }

// Lease is a held lock on one Key. Token strictly increases every time any
// owner acquires the key, so a holder whose lease was taken over cannot
// commit: the store compares tokens.
type Lease struct {
	Key     Key
	Owner   string
	Token   int64
	Expires time.Time
}

// Held reports whether l is a lease at all: Acquire takes none (Token 0)
// for an event with nothing to write (see NothingToWrite).
func (l Lease) Held() bool { return l.Token > 0 }

// Intent is a write in doubt: the newest version a lease holder set out to
// write to the API and whose outcome is not known yet. Acquire records it in
// the same round trip that takes the lease; Commit clears it. While it
// stands, an older event for the key is skipped as superseded (it must not
// pass a newer write that may already have landed), and a create is looked
// up by external id first (an earlier attempt may have created the record
// before it crashed or timed out). The newer event's own retry lands it.
type Intent struct {
	Version int64
	// Token is the lease token of the Acquire that recorded it.
	Token int64
	// At is when it was recorded (the store's clock, for diagnostics).
	At time.Time
	// Failures counts the API failures recorded against this version by
	// ReleaseFailed: an event's attempt budget counts the API's answers
	// only, never waiting for a lock, a pause or an unreachable store.
	Failures int
}

// State is what the store knows about one Key.
type State struct {
	AppliedVersion int64  // 0 when nothing was applied yet
	RemoteID       string // empty when no remote record is known
	Deleted        bool   // the applied version is a tombstone
	// Intent is the write in doubt, nil when none. Acquire returns the one
	// that stood before it recorded its own.
	Intent *Intent
	// RepairNeeded is set when a worker wrote to the API after losing its
	// lease: the remote record may hold stale data until LastEvent is
	// applied again.
	RepairNeeded bool
	// LastEvent is the encoded event applied at AppliedVersion, kept so a
	// repair can re-apply the newest state without the source.
	LastEvent []byte
}

// Superseded reports whether a write of a version newer than version is in
// doubt on st: an event at version must not pass it (its outcome is
// unknown, and it may have landed), so it is skipped; the newer event's own
// retry lands that write.
func Superseded(version int64, st State) bool {
	return st.Intent != nil && st.Intent.Version > version && st.Intent.Version > st.AppliedVersion
}

// NothingToWrite reports whether an event at version (above 0) has nothing
// to write on st: no repair is flagged, and it is superseded or at or
// below the applied version (a duplicate or stale event). Acquire takes no
// lease for it. A flagged key always takes the lease (or waits for it):
// the flag may have been set by a zombie during the current holder's
// lease, which that holder's commit keeps, and the zombie's own retry is
// then the one left to repair it; it must not be acked without a lease
// while the holder still writes (simulation seed 702).
func NothingToWrite(version int64, st State) bool {
	return version > 0 && !st.RepairNeeded && (Superseded(version, st) || version <= st.AppliedVersion)
}

// Commit is the result of a successful sink call.
type Commit struct {
	Version  int64
	RemoteID string
	Deleted  bool
	Event    []byte
}

var (
	// ErrLocked is returned by Acquire while another owner holds the lease.
	ErrLocked = errors.New("store: key is leased by another worker")
	// ErrFenced is returned when the lease was lost: another owner acquired
	// the key after it expired, so this holder must not commit, and a
	// write it sent may have landed after the new owner's.
	ErrFenced = errors.New("store: lease lost, fencing token superseded")
	// ErrStaleCommit is returned when a commit's version is below the
	// applied version (only possible after a fencing bug upstream).
	ErrStaleCommit = errors.New("store: commit version not above applied version")
)

// LockedError is returned by Acquire with ErrLocked; RetryAfter is how long
// the current lease has left.
type LockedError struct {
	Key        Key
	RetryAfter time.Duration
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("store: %s is leased by another worker for %s more", e.Key, e.RetryAfter.Round(time.Millisecond))
}

func (e *LockedError) Unwrap() error { return ErrLocked }

// Store is the port the engine uses for its state.
type Store interface {
	// Acquire leases k for ttl and returns the lease with a new fencing token
	// together with k's state, in one round trip where the backend allows.
	// An owner may re-acquire its own unexpired lease (getting a new token).
	// Returns a *LockedError while another owner's lease is unexpired.
	//
	// version is the event version this attempt is about to write. When it
	// is above both the applied version and the standing intent's version,
	// it becomes the intent (Token = the new lease's, Failures 0) in the
	// same round trip, so a write is fenced as in doubt before it can go
	// out. The returned State is the state before that: its Intent is the
	// one that stood, so the caller can tell whether a newer write is in
	// doubt and how often this version failed already. version 0 records
	// nothing (verify and tests take leases to look).
	//
	// When version has nothing to write (NothingToWrite: superseded, or a
	// duplicate or stale event, on a key not flagged for repair), Acquire
	// takes no
	// lease, whoever holds k: it changes nothing and returns k's state
	// with a Lease that is not Held (Key and Owner set, Token 0), so the
	// caller settles the event without a second round trip to give a lease
	// back. The decision needs no lease: the applied version only grows,
	// and an intent only goes when a version at or above it is committed.
	Acquire(ctx context.Context, k Key, owner string, ttl time.Duration, version int64) (Lease, State, error)
	// Extend prolongs a held lease. ErrFenced if it was lost.
	Extend(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)
	// Commit stores the applied version, remote id, tombstone and event,
	// clears the intent unless it is above c.Version (a repair re-applying
	// an older state leaves a newer write in doubt standing) and releases
	// the lease, all fenced by l's token
	// (ErrFenced when lost). It clears the repair flag only when the flag
	// was set before l was acquired (the holder saw it and re-applied the
	// newest state): a flag set during l, by a zombie whose write may have
	// landed after l's, stays for the next holder. A version below the
	// applied one is ErrStaleCommit; an equal version is allowed, because a
	// repair re-applies the applied version and must clear RepairNeeded.
	Commit(ctx context.Context, l Lease, c Commit) error
	// Release drops a held lease without changing state. A lost lease
	// (another owner acquired k since l) is left alone and reported as
	// ErrFenced: a write sent under l may have landed after that owner's,
	// so the caller flags k (MarkRepair). Releasing a lease released
	// already, or expired while nobody took k over, is no error: fencing
	// compares tokens only, so a retried call is safe.
	Release(ctx context.Context, l Lease) error
	// ReleaseFailed drops a held lease and counts one API failure against
	// the standing intent (Intent.Failures), in one round trip. Fenced like
	// Release: a lost lease counts nothing and is ErrFenced; one released
	// already counts nothing and returns nil (a retried call never counts
	// twice).
	ReleaseFailed(ctx context.Context, l Lease) error
	// MarkRepair flags k for repair, remembering the lease token current
	// at the time (see Commit). Not fenced: it is called precisely by a
	// worker that lost its lease (Commit, Extend, Release or ReleaseFailed
	// answered ErrFenced) after sending a write under it.
	MarkRepair(ctx context.Context, k Key) error
	// Scan calls fn for every key of entity the store knows, in no
	// particular order; used to find entities deleted at the source.
	Scan(ctx context.Context, entity string, fn func(Key, State) error) error

	Control
	Close() error
}

// Control is a small shared key-value space with expiry for control-plane
// records: pause flags, worker heartbeats, resync progress.
type Control interface {
	// SetControl stores value under name; ttl 0 means no expiry.
	SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error
	// GetControl returns the value and whether it exists (and is unexpired).
	GetControl(ctx context.Context, name string) ([]byte, bool, error)
	// ListControl returns all unexpired records whose name starts with prefix.
	ListControl(ctx context.Context, prefix string) (map[string][]byte, error)
	DeleteControl(ctx context.Context, name string) error
}
