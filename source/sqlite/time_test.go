package sqlite

import (
	"testing"
	"time"
)

// FuzzParseTime: occurred_at and created_at are text an application may have
// written in any format; parsing must never panic, and what it accepts
// round-trips through the adapter's own format.
func FuzzParseTime(f *testing.F) {
	f.Add("2026-01-02T03:04:05.678Z")
	f.Add("2026-01-02 03:04:05")
	f.Add("not a time")
	f.Fuzz(func(t *testing.T, s string) {
		got := parseTime(s)
		if got.IsZero() {
			return
		}
		if back := parseTime(ts(got)); !back.Equal(got.Truncate(time.Millisecond)) {
			t.Fatalf("%q parsed as %v, re-parsed as %v", s, got, back)
		}
	})
}
