package hmacsig

import (
	"errors"
	"testing"
	"time"
)

// TestKnownVector pins the documented format: a change here breaks every
// receiver that implemented docs/security.md.
func TestKnownVector(t *testing.T) {
	got := StringToSign("put", "/v1/listings/7?x=1", 1700000000, []byte(`{"a":1}`))
	want := "eventsync-hmac-sha256-v1\nPUT\n/v1/listings/7?x=1\n1700000000\n015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
	if got != want {
		t.Fatalf("StringToSign =\n%q\nwant\n%q", got, want)
	}
	if sig := Sign([]byte("k"), "PUT", "/v1/listings/7?x=1", 1700000000, []byte(`{"a":1}`)); len(sig) != 64 {
		t.Fatalf("Sign = %q, want 64 hex digits", sig)
	}
}

func TestVerify(t *testing.T) {
	secret, now := []byte("s3cret"), time.Unix(1700000000, 0)
	sig := Sign(secret, "POST", "/v1/x", now.Unix(), []byte("b"))
	cases := []struct {
		name      string
		secret    []byte
		ts, sig   string
		body      string
		wantError error
	}{
		{"ok", secret, "1700000000", sig, "b", nil},
		{"wrong secret", []byte("other"), "1700000000", sig, "b", ErrSignature},
		{"body changed", secret, "1700000000", sig, "c", ErrSignature},
		{"replayed later", secret, "1699999000", Sign(secret, "POST", "/v1/x", 1699999000, []byte("b")), "b", ErrTimestamp},
		{"no timestamp", secret, "", sig, "b", ErrTimestamp},
		{"junk timestamp", secret, "12a", sig, "b", ErrTimestamp},
	}
	for _, c := range cases {
		err := Verify(c.secret, "POST", "/v1/x", c.ts, c.sig, []byte(c.body), now, DefaultMaxSkew)
		if !errors.Is(err, c.wantError) || (c.wantError == nil) != (err == nil) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.wantError)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("1700000000", "abc", []byte("body"))
	f.Add("", "", []byte(nil))
	f.Add("-1", "ZZ", []byte("{}"))
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		now := time.Unix(1700000000, 0)
		err := Verify([]byte("k"), "PUT", "/p", ts, sig, body, now, time.Minute)
		if err != nil {
			return
		}
		parsed, perr := ParseTimestamp(ts)
		if perr != nil || sig != Sign([]byte("k"), "PUT", "/p", parsed, body) {
			t.Fatalf("Verify accepted ts=%q sig=%q", ts, sig)
		}
	})
}
