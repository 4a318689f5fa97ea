package natskv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// controlRecord is the JSON value of one control key. ExpiresAt is the
// source of truth for expiry; the server's per-message TTL (when available)
// only garbage-collects records nobody reads any more.
type controlRecord struct {
	Value     []byte    `json:"value"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func decodeControl(b []byte) (controlRecord, error) {
	var r controlRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return controlRecord{}, fmt.Errorf("natskv: corrupt control record: %w", err)
	}
	return r, nil
}

func (r controlRecord) expired(now time.Time) bool {
	return !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt)
}

func controlKey(name string) string { return "c_" + base64.RawURLEncoding.EncodeToString([]byte(name)) }

func parseControlKey(key string) (string, bool) {
	if !strings.HasPrefix(key, "c_") {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(key[2:])
	return string(b), err == nil
}

// SetControl stores value under name; ttl 0 means no expiry.
func (s *Store) SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	rec := controlRecord{Value: value}
	if ttl > 0 {
		rec.ExpiresAt = s.now().Add(ttl)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("natskv: encode control %q: %w", name, err)
	}
	if ttl <= 0 || !s.serverTTL {
		if _, err := s.control.Put(ctx, controlKey(name), b); err != nil {
			return fmt.Errorf("natskv: set control %q: %w", name, err)
		}
		return nil
	}
	// KV Put has no TTL option, so publish to the bucket's subject directly.
	// The server TTL is rounded up to whole seconds (its granularity) plus
	// one, so the server never removes a record before ExpiresAt.
	serverTTL := ttl.Truncate(time.Second) + 2*time.Second
	msg := &nats.Msg{Subject: "$KV." + s.control.Bucket() + "." + controlKey(name), Data: b}
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgTTL(serverTTL)); err != nil {
		return fmt.Errorf("natskv: set control %q: %w", name, err)
	}
	return nil
}

// GetControl returns name's value unless it is absent or expired.
func (s *Store) GetControl(ctx context.Context, name string) ([]byte, bool, error) {
	entry, err := s.control.Get(ctx, controlKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("natskv: get control %q: %w", name, err)
	}
	rec, err := decodeControl(entry.Value())
	if err != nil {
		return nil, false, fmt.Errorf("%q: %w", name, err)
	}
	if rec.expired(s.now()) {
		s.deleteExpired(ctx, entry)
		return nil, false, nil
	}
	return rec.Value, true, nil
}

// deleteExpired removes an expired record unless it was rewritten meanwhile.
func (s *Store) deleteExpired(ctx context.Context, entry jetstream.KeyValueEntry) {
	err := s.control.Delete(ctx, entry.Key(), jetstream.LastRevision(entry.Revision()))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		s.log.Debug("natskv: could not delete expired control record", "key", entry.Key(), "err", err)
	}
}

// ListControl returns all unexpired records whose name starts with prefix.
// Control records are few (flags, one heartbeat per worker), so it lists
// every key and filters by the decoded name.
func (s *Store) ListControl(ctx context.Context, prefix string) (map[string][]byte, error) {
	listCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	lister, err := s.control.ListKeys(listCtx)
	if err != nil {
		return nil, fmt.Errorf("natskv: list control records: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	out := map[string][]byte{}
	for key := range lister.Keys() {
		name, ok := parseControlKey(key)
		if !ok || !strings.HasPrefix(name, prefix) {
			continue
		}
		value, found, err := s.GetControl(ctx, name)
		if err != nil {
			return nil, err
		}
		if found {
			out[name] = value
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("natskv: list control records: %w", err)
	}
	return out, nil
}

// DeleteControl removes name; deleting an absent name is not an error.
func (s *Store) DeleteControl(ctx context.Context, name string) error {
	if err := s.control.Delete(ctx, controlKey(name)); err != nil {
		return fmt.Errorf("natskv: delete control %q: %w", name, err)
	}
	return nil
}
