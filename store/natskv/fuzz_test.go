package natskv

import (
	"testing"
	"time"

	"github.com/eventsync/eventsync/store"
)

// FuzzDecodeRecord feeds arbitrary bucket values (another tool may have
// written the bucket) to the decoders: they must fail cleanly, never panic.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"applied_version":3,"remote_id":"r","intent":{"Version":4,"Token":9,"At":"2026-01-02T15:04:05Z","Failures":2},"lease_owner":"w","lease_token":9,"lease_expires":"2026-01-02T15:04:05Z"}`))
	f.Add([]byte(oldRecord))
	f.Add([]byte(`{"value":"aGk=","expires_at":"2026-01-02T15:04:05Z"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"lease_expires":"not a time"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if rec, err := decodeRecord(b); err == nil {
			_ = rec.state()
		}
		_, _ = decodeControl(b)
	})
}

// oldRecord is a state record as versions before failure counting wrote
// it: the intent with an action, without a failure count.
const oldRecord = `{"applied_version":3,"intent":{"Version":4,"Action":"create","Token":9,"At":"2026-01-02T15:04:05Z"},"lease_token":9}`

func TestDecodeRecordOfThePreviousVersion(t *testing.T) {
	rec, err := decodeRecord([]byte(oldRecord))
	if err != nil {
		t.Fatal(err)
	}
	st := rec.state()
	at := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	if st.AppliedVersion != 3 || st.Intent == nil || *st.Intent != (store.Intent{Version: 4, Token: 9, At: st.Intent.At}) || !st.Intent.At.Equal(at) {
		t.Fatalf("decoded %+v with intent %+v; want applied 3, intent version 4 token 9 at %s, no failures", st, st.Intent, at)
	}
}

// FuzzStateKey checks that any entity and key map to a valid KV key that
// decodes back to the same pair, and that foreign keys never panic.
func FuzzStateKey(f *testing.F) {
	f.Add("listing", "42")
	f.Add("", "")
	f.Add("a.b", "*>")
	f.Fuzz(func(t *testing.T, entity, key string) {
		k := store.Key{Entity: entity, Key: key}
		name := stateKey(k)
		if !validKVKey(name) {
			t.Fatalf("stateKey(%q) = %q is not a valid KV key", k, name)
		}
		got, ok := parseStateKey(name)
		if !ok || got != k {
			t.Fatalf("round trip of %q gave %q, %v", k, got, ok)
		}
		_, _ = parseStateKey(entity + key)
		_, _ = parseControlKey(key)
	})
}

func validKVKey(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' || r == '/' || r == '_' || r == '=' || r == '.':
		default:
			return false
		}
	}
	return true
}
