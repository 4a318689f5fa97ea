// Package memory is an in-memory state store (store.Store) for one process:
// for embedding eventsync where nothing must survive a restart, for tests,
// and for the deterministic simulation, which drives lease and control-record
// expiry by moving the store's clock.
//
// Everything lives in maps behind one mutex. The store starts no goroutines
// and sets no timers: a lease or a control record is expired when the
// injected clock (Config.Now) says so at the moment a call looks at it. Calls
// read the clock once each, under the mutex, so the order of calls is the
// order of their clock readings. Scan visits keys in sorted order, so a
// seeded run over this store replays identically.
//
// State is not durable and not shared between processes: workers in other
// processes cannot see it. Use the PostgreSQL, Redis or NATS store for that.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/eventsync/eventsync/store"
)

// Config configures the store.
type Config struct {
	// Now is the store's clock: it judges lease and control-record expiry
	// and stamps Intent.At. nil means time.Now. It is called with the
	// store's mutex held, so it must not call the store.
	Now func() time.Time
}

// ErrClosed is returned by every call after Close.
var ErrClosed = errors.New("memory store: closed")

// Store is a store.Store held in memory. It is safe for concurrent use.
type Store struct {
	now func() time.Time

	mu      sync.Mutex
	closed  bool
	keys    map[store.Key]*entry
	control map[string]controlRecord
}

var _ store.Store = (*Store)(nil)

// entry is one key's state and lease. Entries are never removed, so the
// token counter never restarts.
type entry struct {
	applied  int64
	remoteID string
	deleted  bool
	event    []byte
	intent   *store.Intent
	repair   bool
	// repairToken is the lease token current when repair was set: a commit
	// under that lease keeps the flag (see store.Store.Commit).
	repairToken int64
	// token is the newest lease token handed out; leased is false when
	// nobody holds the key (after a commit or release).
	token   int64
	leased  bool
	owner   string
	expires time.Time
}

type controlRecord struct {
	value   []byte
	expires time.Time // zero: never
}

// New returns an empty store.
func New(cfg Config) *Store {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{now: cfg.Now, keys: map[store.Key]*entry{}, control: map[string]controlRecord{}}
}

// Close makes every later call fail with ErrClosed. It is safe to call more
// than once.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// lock takes the mutex for one call, failing when ctx has ended or the store
// is closed; on success the caller must unlock.
func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) entry(k store.Key) *entry {
	e, ok := s.keys[k]
	if !ok {
		e = &entry{}
		s.keys[k] = e
	}
	return e
}

// held returns k's entry when l is its current, unreleased lease. Fencing
// compares tokens only: a lease that expired while nobody took the key over
// is still held.
func (s *Store) held(l store.Lease) (*entry, bool) {
	e, ok := s.keys[l.Key]
	if !ok || !e.leased || e.token != l.Token {
		return nil, false
	}
	return e, true
}

// state returns a copy the caller may keep and change.
func (e *entry) state() store.State {
	st := store.State{
		AppliedVersion: e.applied,
		RemoteID:       e.remoteID,
		Deleted:        e.deleted,
		RepairNeeded:   e.repair,
		LastEvent:      clone(e.event),
	}
	if e.intent != nil {
		in := *e.intent
		st.Intent = &in
	}
	return st
}

// clone copies b, keeping nil and empty apart as stored.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// Acquire implements store.Store.
func (s *Store) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	if ttl <= 0 {
		return store.Lease{}, store.State{}, fmt.Errorf("memory store: acquire %s: ttl %s must be positive", k, ttl)
	}
	if err := s.lock(ctx); err != nil {
		return store.Lease{}, store.State{}, fmt.Errorf("memory store: acquire %s: %w", k, err)
	}
	defer s.mu.Unlock()
	now := s.now()
	e := s.entry(k)
	prev := e.state()
	if store.NothingToWrite(version, prev) {
		return store.Lease{Key: k, Owner: owner}, prev, nil
	}
	if e.leased && e.owner != owner && now.Before(e.expires) {
		return store.Lease{}, store.State{}, &store.LockedError{Key: k, RetryAfter: e.expires.Sub(now)}
	}
	e.token++
	e.leased, e.owner = true, owner
	e.expires = now.Add(ttl)
	if version > e.applied && (e.intent == nil || version > e.intent.Version) {
		e.intent = &store.Intent{Version: version, Token: e.token, At: now}
	}
	return store.Lease{Key: k, Owner: owner, Token: e.token, Expires: e.expires}, prev, nil
}

// Extend implements store.Store.
func (s *Store) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if ttl <= 0 {
		return store.Lease{}, fmt.Errorf("memory store: extend %s: ttl %s must be positive", l.Key, ttl)
	}
	if err := s.lock(ctx); err != nil {
		return store.Lease{}, fmt.Errorf("memory store: extend %s: %w", l.Key, err)
	}
	defer s.mu.Unlock()
	e, ok := s.held(l)
	if !ok {
		return store.Lease{}, fmt.Errorf("memory store: extend %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	e.expires = s.now().Add(ttl)
	l.Expires = e.expires
	return l, nil
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: commit %s version %d: %w", l.Key, c.Version, err)
	}
	defer s.mu.Unlock()
	e, ok := s.held(l)
	if !ok {
		return fmt.Errorf("memory store: commit %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	if c.Version < e.applied {
		return fmt.Errorf("memory store: commit %s version %d, applied %d: %w", l.Key, c.Version, e.applied, store.ErrStaleCommit)
	}
	e.applied, e.remoteID, e.deleted, e.event = c.Version, c.RemoteID, c.Deleted, clone(c.Event)
	if e.intent != nil && e.intent.Version <= c.Version {
		e.intent = nil
	}
	if e.repairToken < l.Token {
		e.repair = false
	}
	e.leased, e.owner, e.expires = false, "", time.Time{}
	return nil
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, l store.Lease) error {
	return s.release(ctx, l, false)
}

// ReleaseFailed implements store.Store.
func (s *Store) ReleaseFailed(ctx context.Context, l store.Lease) error {
	return s.release(ctx, l, true)
}

func (s *Store) release(ctx context.Context, l store.Lease, failed bool) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: release %s: %w", l.Key, err)
	}
	defer s.mu.Unlock()
	e, ok := s.held(l)
	if !ok {
		if cur, known := s.keys[l.Key]; !known || cur.token != l.Token {
			return fmt.Errorf("memory store: release %s token %d: %w", l.Key, l.Token, store.ErrFenced)
		}
		return nil // released already: nothing to drop, nothing to count
	}
	if failed && e.intent != nil {
		e.intent.Failures++
	}
	e.leased, e.owner, e.expires = false, "", time.Time{}
	return nil
}

// MarkRepair implements store.Store.
func (s *Store) MarkRepair(ctx context.Context, k store.Key) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: mark %s for repair: %w", k, err)
	}
	defer s.mu.Unlock()
	e := s.entry(k)
	e.repair = true
	e.repairToken = e.token
	return nil
}

// Scan implements store.Store. It visits the keys in sorted order, from a
// snapshot taken when it starts, without holding the mutex while fn runs
// (fn may call the store).
func (s *Store) Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: scan %s: %w", entity, err)
	}
	type item struct {
		k  store.Key
		st store.State
	}
	var items []item
	for k, e := range s.keys {
		if k.Entity == entity {
			items = append(items, item{k, e.state()})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.k.Key, b.k.Key) })
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory store: scan %s: %w", entity, err)
		}
		if err := fn(it.k, it.st); err != nil {
			return err
		}
	}
	return nil
}

// expired reports whether r is past its expiry at now.
func (r controlRecord) expired(now time.Time) bool {
	return !r.expires.IsZero() && !now.Before(r.expires)
}

// SetControl implements store.Control.
func (s *Store) SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("memory store: set control %q: negative ttl %s", name, ttl)
	}
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: set control %q: %w", name, err)
	}
	defer s.mu.Unlock()
	r := controlRecord{value: append([]byte{}, value...)}
	if ttl > 0 {
		r.expires = s.now().Add(ttl)
	}
	s.control[name] = r
	return nil
}

// GetControl implements store.Control.
func (s *Store) GetControl(ctx context.Context, name string) ([]byte, bool, error) {
	if err := s.lock(ctx); err != nil {
		return nil, false, fmt.Errorf("memory store: get control %q: %w", name, err)
	}
	defer s.mu.Unlock()
	r, ok := s.control[name]
	if !ok {
		return nil, false, nil
	}
	if r.expired(s.now()) {
		delete(s.control, name)
		return nil, false, nil
	}
	return clone(r.value), true, nil
}

// ListControl implements store.Control. Expired records it meets are
// removed.
func (s *Store) ListControl(ctx context.Context, prefix string) (map[string][]byte, error) {
	if err := s.lock(ctx); err != nil {
		return nil, fmt.Errorf("memory store: list control %q: %w", prefix, err)
	}
	defer s.mu.Unlock()
	now := s.now()
	out := map[string][]byte{}
	for name, r := range s.control {
		switch {
		case r.expired(now):
			delete(s.control, name)
		case strings.HasPrefix(name, prefix):
			out[name] = clone(r.value)
		}
	}
	return out, nil
}

// DeleteControl implements store.Control.
func (s *Store) DeleteControl(ctx context.Context, name string) error {
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("memory store: delete control %q: %w", name, err)
	}
	defer s.mu.Unlock()
	delete(s.control, name)
	return nil
}
