package redis

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseInfoPersistence(t *testing.T) {
	const info = "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:%s\r\naof_rewrite_in_progress:0\r\n"
	for flag, want := range map[string]bool{"0": false, "1": true} {
		p := parseInfoPersistence(fmt.Sprintf(info, flag))
		if p.AppendOnly != want || p.SaveKnown {
			t.Errorf("aof_enabled:%s parsed as %+v, want AppendOnly %v and SaveKnown false", flag, p, want)
		}
		if p.Durable() != want {
			t.Errorf("aof_enabled:%s: Durable() = %v, want %v", flag, p.Durable(), want)
		}
	}
}

func TestDecodeStateRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	st, err := decodeState([]any{"42", "r-1", "1", `{"a":1}`, "43", "update", "7", at.Format(time.RFC3339Nano), "1"})
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 42 || st.RemoteID != "r-1" || !st.Deleted || string(st.LastEvent) != `{"a":1}` || !st.RepairNeeded {
		t.Errorf("decoded %+v", st)
	}
	if st.Intent == nil || st.Intent.Version != 43 || st.Intent.Action != "update" || st.Intent.Token != 7 || !st.Intent.At.Equal(at) {
		t.Errorf("decoded intent %+v", st.Intent)
	}
	st, err = decodeState(make([]any, 9))
	if err != nil || st.AppliedVersion != 0 || st.Intent != nil || st.LastEvent != nil {
		t.Errorf("all-nil fields decoded as %+v, %v; want the zero state", st, err)
	}
	if _, err := decodeState([]any{"not a number", nil, nil, nil, nil, nil, nil, nil, nil}); err == nil {
		t.Error("corrupt applied version decoded without error")
	}
}

// FuzzDecodeState feeds arbitrary hash values (a corrupted or foreign hash)
// to the decoder: it must return an error or a state, never panic.
func FuzzDecodeState(f *testing.F) {
	f.Add("42", "r", "1", "{}", "43", "create", "7", "2026-01-02T03:04:05Z", "1", uint16(0))
	f.Add("x", "", "", "", "-1", "", "y", "not a time", "0", uint16(0x1ff))
	f.Fuzz(func(t *testing.T, v, r, d, e, iv, ia, it, iat, rp string, nils uint16) {
		vals := []any{v, r, d, e, iv, ia, it, iat, rp}
		for i := range vals {
			if nils&(1<<i) != 0 {
				vals[i] = nil
			}
		}
		st, err := decodeState(vals)
		if err != nil {
			return
		}
		if s, ok := vals[1].(string); ok && st.RemoteID != s {
			t.Errorf("remote id %q decoded as %q", s, st.RemoteID)
		}
		if (vals[4] == nil) != (st.Intent == nil) {
			t.Errorf("intent presence: field %v decoded as %+v", vals[4], st.Intent)
		}
	})
}

// FuzzParseInfoPersistence: INFO output from any server must parse without
// panicking, and only an aof_enabled:1 line turns AOF on.
func FuzzParseInfoPersistence(f *testing.F) {
	f.Add("# Persistence\r\naof_enabled:1\r\n")
	f.Add("aof_enabled:0\naof_enabled")
	f.Fuzz(func(t *testing.T, info string) {
		p := parseInfoPersistence(info)
		if p.SaveKnown {
			t.Errorf("INFO cannot tell the save schedule, got %+v", p)
		}
		if p.AppendOnly && !strings.Contains(info, "aof_enabled:1") {
			t.Errorf("AOF reported on for INFO without aof_enabled:1: %q", info)
		}
	})
}
