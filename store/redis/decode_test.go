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
	at := time.Date(2026, 1, 2, 3, 4, 5, 123000000, time.UTC)
	st, err := decodeState([]any{"42", "r-1", "1", `{"a":1}`, "43", "7", fmt.Sprint(at.UnixMilli()), "2", "1"})
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 42 || st.RemoteID != "r-1" || !st.Deleted || string(st.LastEvent) != `{"a":1}` || !st.RepairNeeded {
		t.Errorf("decoded %+v", st)
	}
	if st.Intent == nil || st.Intent.Version != 43 || st.Intent.Token != 7 || !st.Intent.At.Equal(at) || st.Intent.Failures != 2 {
		t.Errorf("decoded intent %+v", st.Intent)
	}
	// An intent as versions before failure counting wrote it: RFC 3339, no
	// count.
	old := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	st, err = decodeState([]any{"42", nil, nil, nil, "43", "7", old.Format(time.RFC3339Nano), nil, nil})
	if err != nil || st.Intent == nil || !st.Intent.At.Equal(old) || st.Intent.Failures != 0 {
		t.Errorf("old intent decoded as %+v, %v", st.Intent, err)
	}
	st, err = decodeState(make([]any, 9))
	if err != nil || st.AppliedVersion != 0 || st.Intent != nil || st.LastEvent != nil {
		t.Errorf("all-nil fields decoded as %+v, %v; want the zero state", st, err)
	}
	for i, bad := range map[int]string{0: "not a number", 5: "x", 6: "not a time", 7: "-1"} {
		vals := []any{"1", nil, nil, nil, "2", "3", "4", "0", nil}
		vals[i] = bad
		if _, err := decodeState(vals); err == nil {
			t.Errorf("corrupt field %d (%q) decoded without error", i, bad)
		}
	}
}

// FuzzDecodeState feeds arbitrary hash values (a corrupted or foreign hash)
// to the decoder: it must return an error or a state, never panic.
func FuzzDecodeState(f *testing.F) {
	f.Add("42", "r", "1", "{}", "43", "7", "1767323045000", "2", "1", uint16(0))
	f.Add("42", "r", "1", "{}", "43", "7", "2026-01-02T03:04:05Z", "0", "1", uint16(1<<7))
	f.Add("x", "", "", "", "-1", "y", "not a time", "-3", "0", uint16(0x1ff))
	f.Fuzz(func(t *testing.T, v, r, d, e, iv, it, iat, fails, rp string, nils uint16) {
		vals := []any{v, r, d, e, iv, it, iat, fails, rp}
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
		if st.Intent != nil && st.Intent.Failures < 0 {
			t.Errorf("negative failure count %q decoded as %d", vals[7], st.Intent.Failures)
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
