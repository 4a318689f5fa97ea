// Package natskv implements the state store (store.Store) on NATS JetStream
// key-value buckets: the embedded default for one-machine use, and usable
// against an external NATS server or cluster.
//
// Layout: bucket "<prefix>_state" holds one JSON record per (entity, key),
// bucket "<prefix>_control" the control-plane records. KV keys allow only
// [-/_=.a-zA-Z0-9], so entity and key are base64url-encoded into the KV key
// "e_<entity>.k_<key>"; a Scan of one entity is a subject filter
// "e_<entity>.*".
//
// Every write is a compare-and-set on the key's revision (KV Update with the
// last revision), so read-check-write is atomic per key. The fencing token of
// a lease is the revision the acquiring write replaced plus one: revisions are
// the bucket's stream sequence numbers and strictly increase, so every
// acquisition gets a larger token than any before it, and the token is known
// before the write so it can be stored in the record. Fenced operations read
// the record, compare its token with the lease's, and write with CAS,
// retrying internally when another write to the key (say MarkRepair) raced
// them while the token still matches. State keys are never deleted, which
// keeps the revisions, and so the tokens, monotonic.
//
// Clock assumption: NATS does not expose server time, so lease expiry is an
// absolute time from the acquiring process's clock, compared with the local
// clock of the next acquirer. Clock skew between machines shortens or
// lengthens leases by the skew; keep clocks in sync (NTP) and leases well
// above the expected skew. Fencing stays correct under any skew: a holder
// whose lease was taken over can never commit.
package natskv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/internal/natsconn"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/store"
)

// Config configures the store. Exactly one of URL and Conn is needed.
type Config struct {
	// URL of the NATS server, e.g. nats://127.0.0.1:4222. Ignored when Conn
	// is set.
	URL string
	// TLS verifies a TLS connection (tls://, or nats:// upgraded when
	// set) with a custom certificate authority and presents a client
	// certificate (eventsync.TLSConfig, YAML key store_tls).
	TLS tlsconf.Config
	// CredentialsFile (a .creds file: user JWT and NKey seed) or NKeyFile
	// (a user's NKey seed) authenticates the connection (YAML key
	// store_nats).
	CredentialsFile, NKeyFile string
	// Conn is an existing connection (for example the embedded server's
	// in-process one). The store does not close it.
	Conn *nats.Conn
	// Bucket is the prefix of the bucket names; default "eventsync".
	Bucket string
	// Replicas of each bucket in a NATS cluster; default 1.
	Replicas int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock used for lease expiry; nil means time.Now.
	Now func() time.Time
}

var bucketPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = "eventsync"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports configuration errors with the fix.
func (c Config) Validate() error {
	if c.URL == "" && c.Conn == nil {
		return setting.Errorf("store", "natskv: no NATS URL or connection given; want nats://host:4222")
	}
	if !bucketPattern.MatchString(c.Bucket) {
		return fmt.Errorf("natskv: bucket prefix %q may only contain letters, digits, '_' and '-'; choose another", c.Bucket)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("natskv: replicas %d out of range; use 1 to 5", c.Replicas)
	}
	return nil
}

// Store is a store.Store on NATS JetStream KV.
type Store struct {
	nc        *nats.Conn
	ownConn   bool
	state     jetstream.KeyValue
	control   jetstream.KeyValue
	js        jetstream.JetStream
	serverTTL bool // the control bucket accepts per-message TTLs
	log       *slog.Logger
	now       func() time.Time

	heldM sync.Mutex
	held  map[store.Key]held // see held
}

var _ store.Store = (*Store)(nil)

// Open connects (unless cfg.Conn is given) and creates or updates the
// buckets idempotently.
func Open(ctx context.Context, cfg Config) (_ *Store, err error) {
	secrets := redact.NewScrubber(cfg.URL) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Store{nc: cfg.Conn, log: cfg.Logger, now: cfg.Now}
	if s.nc == nil {
		nc, err := connect(cfg)
		if err != nil {
			return nil, err
		}
		s.nc, s.ownConn = nc, true
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		s.closeConn()
		return nil, fmt.Errorf("natskv: JetStream context: %w", err)
	}
	s.js = js
	s.state, err = createBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket + "_state",
		Description: "eventsync per-entity state: applied version, remote id, intent, lease",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		s.closeConn()
		return nil, fmt.Errorf("natskv: create bucket %s_state: %w; is JetStream enabled on the server (nats-server -js)?", cfg.Bucket, err)
	}
	controlCfg := jetstream.KeyValueConfig{
		Bucket:         cfg.Bucket + "_control",
		Description:    "eventsync control records: pause flags, heartbeats, progress",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       cfg.Replicas,
		LimitMarkerTTL: time.Minute, // enables per-message TTL on servers >= 2.11
	}
	s.control, err = createBucket(ctx, js, controlCfg)
	s.serverTTL = err == nil
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// Older servers: expiry is enforced by the expires_at stored in each
		// value, and expired records are deleted lazily when read.
		controlCfg.LimitMarkerTTL = 0
		s.control, err = createBucket(ctx, js, controlCfg)
	}
	if err != nil {
		s.closeConn()
		return nil, fmt.Errorf("natskv: create bucket %s_control: %w", cfg.Bucket, err)
	}
	return s, nil
}

// createBucket creates or updates a bucket, retrying the transient "error
// creating store for stream" (10049) that servers before 2.10 return when a
// create races the removal of the account's last stream directory.
func createBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for attempt := 1; ; attempt++ {
		kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
		var apiErr *jetstream.APIError
		if err == nil || attempt == 5 || !errors.As(err, &apiErr) || apiErr.ErrorCode != 10049 {
			return kv, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
		}
	}
}

func connect(cfg Config) (*nats.Conn, error) {
	nc, err := natsconn.ConnectWith(cfg.URL, "store", natsconn.Options{TLS: cfg.TLS, CredentialsFile: cfg.CredentialsFile, NKeyFile: cfg.NKeyFile}, cfg.Logger)
	return nc, setting.Wrap("store", err)
}

func (s *Store) closeConn() {
	if s.ownConn {
		s.nc.Close()
	}
}

// Close closes the connection if the store opened it.
func (s *Store) Close() error {
	s.closeConn()
	return nil
}

// DeleteBuckets removes both buckets and everything in them. Meant for
// tests and for "start over" tooling; the store is unusable afterwards.
func (s *Store) DeleteBuckets(ctx context.Context) error {
	var errs []error
	for _, kv := range []jetstream.KeyValue{s.state, s.control} {
		if err := s.js.DeleteKeyValue(ctx, kv.Bucket()); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			errs = append(errs, fmt.Errorf("natskv: delete bucket %s: %w", kv.Bucket(), err))
		}
	}
	return errors.Join(errs...)
}

var b64 = base64.RawURLEncoding

func stateKey(k store.Key) string {
	return "e_" + b64.EncodeToString([]byte(k.Entity)) + ".k_" + b64.EncodeToString([]byte(k.Key))
}

func entityFilter(entity string) string {
	return "e_" + b64.EncodeToString([]byte(entity)) + ".*"
}

// parseStateKey inverts stateKey; ok is false for keys this store did not write.
func parseStateKey(s string) (store.Key, bool) {
	ent, key, found := strings.Cut(s, ".")
	if !found || !strings.HasPrefix(ent, "e_") || !strings.HasPrefix(key, "k_") {
		return store.Key{}, false
	}
	e, err1 := b64.DecodeString(ent[2:])
	k, err2 := b64.DecodeString(key[2:])
	if err1 != nil || err2 != nil {
		return store.Key{}, false
	}
	return store.Key{Entity: string(e), Key: string(k)}, true
}

// record is the JSON value of one state key.
type record struct {
	AppliedVersion int64         `json:"applied_version,omitempty"`
	RemoteID       string        `json:"remote_id,omitempty"`
	Deleted        bool          `json:"deleted,omitempty"`
	Intent         *store.Intent `json:"intent,omitempty"`
	RepairNeeded   bool          `json:"repair_needed,omitempty"`
	// RepairToken is the lease token current when RepairNeeded was set: a
	// commit under that lease keeps the flag (see store.Store.Commit).
	RepairToken int64  `json:"repair_token,omitempty"`
	LastEvent   []byte `json:"last_event,omitempty"`
	// The lease. LeaseToken stays after a release; LeaseOwner is empty when
	// nobody holds the key.
	LeaseOwner   string    `json:"lease_owner,omitempty"`
	LeaseToken   int64     `json:"lease_token,omitempty"`
	LeaseExpires time.Time `json:"lease_expires,omitzero"`
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("natskv: corrupt state record: %w", err)
	}
	return r, nil
}

func (r record) state() store.State {
	st := store.State{
		AppliedVersion: r.AppliedVersion,
		RemoteID:       r.RemoteID,
		Deleted:        r.Deleted,
		RepairNeeded:   r.RepairNeeded,
		LastEvent:      r.LastEvent,
	}
	if r.Intent != nil {
		in := *r.Intent
		st.Intent = &in
	}
	return st
}

// load reads k's record and the revision to CAS against (0: absent).
func (s *Store) load(ctx context.Context, k store.Key) (record, uint64, error) {
	entry, err := s.state.Get(ctx, stateKey(k))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return record{}, 0, nil
	}
	if err != nil {
		return record{}, 0, fmt.Errorf("natskv: read %s: %w", k, err)
	}
	rec, err := decodeRecord(entry.Value())
	if err != nil {
		return record{}, 0, fmt.Errorf("%s: %w", k, err)
	}
	return rec, entry.Revision(), nil
}

// errConflict means another write to the key won the CAS; read again.
var errConflict = errors.New("natskv: revision conflict")

// save writes rec expecting revision rev (0: the key must be absent) and
// returns the revision written.
func (s *Store) save(ctx context.Context, k store.Key, rec record, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("natskv: encode %s: %w", k, err)
	}
	var written uint64
	if rev == 0 {
		written, err = s.state.Create(ctx, stateKey(k), b)
	} else {
		written, err = s.state.Update(ctx, stateKey(k), b, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, errConflict
	}
	if err != nil {
		return 0, fmt.Errorf("natskv: write %s: %w", k, err)
	}
	return written, nil
}

// update runs read-modify-CAS until it wins or mutate/ctx fails, and
// returns the record and revision it wrote.
func (s *Store) update(ctx context.Context, k store.Key, mutate func(rec *record, rev uint64) error) (record, uint64, error) {
	for {
		if err := ctx.Err(); err != nil {
			return record{}, 0, fmt.Errorf("natskv: %s: %w", k, err)
		}
		rec, rev, err := s.load(ctx, k)
		if err != nil {
			return record{}, 0, err
		}
		if err := mutate(&rec, rev); err != nil {
			return record{}, 0, err
		}
		written, err := s.save(ctx, k, rec, rev)
		if errors.Is(err, errConflict) {
			continue
		}
		return rec, written, err
	}
}

// held is what this store last wrote for a lease it handed out: the record
// and its revision. A fenced operation first tries a CAS at that revision
// with that record, skipping the read. Success proves nobody wrote the key
// since, so the record is current and the lease token in it is ours: the
// fencing check holds on the server. Any conflict falls back to the
// read-check-write loop, so a cache entry can cost a round trip but never
// correctness.
type held struct {
	token int64
	rev   uint64
	rec   record
}

// maxHeld bounds the cache. Entries leave on Commit and Release; ones left
// behind by callers that let leases expire are dropped when it fills up.
const maxHeld = 1 << 16

func (s *Store) remember(k store.Key, token int64, rev uint64, rec record) {
	s.heldM.Lock()
	defer s.heldM.Unlock()
	if s.held == nil || len(s.held) >= maxHeld {
		s.held = make(map[store.Key]held)
	}
	s.held[k] = held{token: token, rev: rev, rec: rec}
}

// forget drops the entry of lease token only, so a holder that lost the
// key does not drop the entry of the one that took it over.
func (s *Store) forget(k store.Key, token int64) {
	s.heldM.Lock()
	if h, ok := s.held[k]; ok && h.token == token {
		delete(s.held, k)
	}
	s.heldM.Unlock()
}

func (s *Store) recall(k store.Key, token int64) (held, bool) {
	s.heldM.Lock()
	defer s.heldM.Unlock()
	h, ok := s.held[k]
	return h, ok && h.token == token
}

// Acquire leases k and records version as the intent when it is above the
// applied version and the standing intent, in the same CAS write; see the
// package comment for the token.
func (s *Store) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	var lease store.Lease
	var st store.State
	rec, rev, err := s.update(ctx, k, func(rec *record, rev uint64) error {
		st = rec.state()
		if store.NothingToWrite(version, st) {
			return errNothingToWrite
		}
		now := s.now()
		if rec.LeaseOwner != "" && rec.LeaseOwner != owner && now.Before(rec.LeaseExpires) {
			return &store.LockedError{Key: k, RetryAfter: rec.LeaseExpires.Sub(now)}
		}
		rec.LeaseOwner = owner
		rec.LeaseToken = int64(rev) + 1
		rec.LeaseExpires = now.Add(ttl)
		if version > rec.AppliedVersion && (rec.Intent == nil || version > rec.Intent.Version) {
			rec.Intent = &store.Intent{Version: version, Token: rec.LeaseToken, At: now}
		}
		lease = store.Lease{Key: k, Owner: owner, Token: rec.LeaseToken, Expires: rec.LeaseExpires}
		return nil
	})
	switch {
	case errors.Is(err, errNothingToWrite):
		// Read, nothing written: one round trip.
		return store.Lease{Key: k, Owner: owner}, st, nil
	case err != nil:
		return store.Lease{}, store.State{}, err
	}
	s.remember(k, lease.Token, rev, rec)
	return lease, st, nil
}

// errNothingToWrite ends an Acquire that takes no lease.
var errNothingToWrite = errors.New("natskv: nothing to write")

// errReleased is the ErrFenced of a lease whose token is still current but
// which was released already: Commit and Extend are fenced by it, a
// retried Release is not.
var errReleased = fmt.Errorf("released already: %w", store.ErrFenced)

// fenced applies mutate only while l is still the key's current lease.
// done says whether the operation ends the lease (Commit, Release), so the
// cached write is dropped instead of updated.
func (s *Store) fenced(ctx context.Context, l store.Lease, done bool, mutate func(rec *record) error) error {
	if h, ok := s.recall(l.Key, l.Token); ok {
		rec := h.rec
		// An error from mutate is decided on the fresh record below, never
		// on the cached one.
		if mutate(&rec) == nil {
			rev, err := s.save(ctx, l.Key, rec, h.rev)
			if err == nil {
				s.settle(l, done, rev, rec)
				return nil
			}
			if !errors.Is(err, errConflict) {
				s.forget(l.Key, l.Token)
				return err
			}
		}
	}
	rec, rev, err := s.update(ctx, l.Key, func(rec *record, rev uint64) error {
		switch {
		case rev == 0 || rec.LeaseToken != l.Token:
			return store.ErrFenced
		case rec.LeaseOwner == "":
			return errReleased
		}
		return mutate(rec)
	})
	if err != nil {
		s.forget(l.Key, l.Token)
		return err
	}
	s.settle(l, done, rev, rec)
	return nil
}

func (s *Store) settle(l store.Lease, done bool, rev uint64, rec record) {
	if done {
		s.forget(l.Key, l.Token)
		return
	}
	s.remember(l.Key, l.Token, rev, rec)
}

// Extend prolongs a held lease.
func (s *Store) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	err := s.fenced(ctx, l, false, func(rec *record) error {
		rec.LeaseExpires = s.now().Add(ttl)
		l.Expires = rec.LeaseExpires
		return nil
	})
	if err != nil {
		return store.Lease{}, err
	}
	return l, nil
}

// Commit stores the result of a sink call and releases the lease.
func (s *Store) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	return s.fenced(ctx, l, true, func(rec *record) error {
		if c.Version < rec.AppliedVersion {
			return fmt.Errorf("%w: %s commit of version %d, applied is %d", store.ErrStaleCommit, l.Key, c.Version, rec.AppliedVersion)
		}
		rec.AppliedVersion = c.Version
		rec.RemoteID = c.RemoteID
		rec.Deleted = c.Deleted
		rec.LastEvent = c.Event
		// An intent above the committed version (a repair re-applying an
		// older state) stays in doubt.
		if rec.Intent != nil && rec.Intent.Version <= c.Version {
			rec.Intent = nil
		}
		if rec.RepairToken < l.Token {
			rec.RepairNeeded = false
		}
		rec.LeaseOwner = ""
		rec.LeaseExpires = time.Time{}
		return nil
	})
}

// Release drops a held lease. A lost lease is left alone and reported as
// store.ErrFenced; one released already is no error.
func (s *Store) Release(ctx context.Context, l store.Lease) error {
	err := s.fenced(ctx, l, true, func(rec *record) error {
		rec.LeaseOwner = ""
		rec.LeaseExpires = time.Time{}
		return nil
	})
	return releaseResult(l, err)
}

// releaseResult is the answer of a release: errReleased is none, a lost
// lease is store.ErrFenced with the lease named.
func releaseResult(l store.Lease, err error) error {
	switch {
	case errors.Is(err, errReleased):
		return nil
	case errors.Is(err, store.ErrFenced):
		return fmt.Errorf("natskv: release %s token %d: %w", l.Key, l.Token, err)
	}
	return err
}

// ReleaseFailed drops a held lease and counts one failure against the
// standing intent. A lost lease counts nothing and is store.ErrFenced; one
// released already counts nothing and is no error.
func (s *Store) ReleaseFailed(ctx context.Context, l store.Lease) error {
	err := s.fenced(ctx, l, true, func(rec *record) error {
		rec.LeaseOwner = ""
		rec.LeaseExpires = time.Time{}
		if rec.Intent != nil {
			// A copy: the cached record of the lease shares the pointer.
			in := *rec.Intent
			in.Failures++
			rec.Intent = &in
		}
		return nil
	})
	return releaseResult(l, err)
}

// MarkRepair flags k for repair, unfenced.
func (s *Store) MarkRepair(ctx context.Context, k store.Key) error {
	_, _, err := s.update(ctx, k, func(rec *record, _ uint64) error {
		rec.RepairNeeded = true
		rec.RepairToken = rec.LeaseToken
		return nil
	})
	return err
}

// Scan calls fn for every key of entity, streaming the key list so memory
// stays flat for millions of keys. A key written while the scan runs may be
// reported twice (the KV watcher redelivers it); callers act idempotently.
func (s *Store) Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error {
	// The lister's goroutine stops only when its context ends or the list
	// is drained, so an early return must cancel it.
	listCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	lister, err := s.state.ListKeysFiltered(listCtx, entityFilter(entity))
	if err != nil {
		return fmt.Errorf("natskv: list keys of %q: %w", entity, err)
	}
	defer func() { _ = lister.Stop() }()
	for name := range lister.Keys() {
		k, ok := parseStateKey(name)
		if !ok || k.Entity != entity {
			continue
		}
		rec, rev, err := s.load(ctx, k)
		if err != nil {
			return err
		}
		if rev == 0 {
			continue // deleted since listed
		}
		if err := fn(k, rec.state()); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natskv: scan %q: %w", entity, err)
	}
	return nil
}
