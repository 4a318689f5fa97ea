package ops

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseWhen feeds ctl's and the console's --since/--until values:
// blank is no bound; a duration is that long before now, never after it;
// a time is what RFC 3339 reads, and prints back to the same instant; a
// refusal quotes the input.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"", " ", "90m", "0s", "-1h", "2562047h", "2025-03-01T11:59:00Z", "2025-03-01T11:59:00.123456789+05:30", "yesterday", "1.5h", "\x00", "9999-12-31T23:59:59Z"} {
		f.Add(s)
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseWhen(s, now)
		if err != nil {
			if !strings.Contains(err.Error(), "\"") {
				t.Fatalf("refusal of %q does not quote it: %v", s, err)
			}
			return
		}
		trimmed := strings.TrimSpace(s)
		if trimmed == "" {
			if !got.IsZero() {
				t.Fatalf("blank %q gave %v", s, got)
			}
			return
		}
		if d, derr := time.ParseDuration(trimmed); derr == nil {
			if got.After(now) || !got.Equal(now.Add(-d)) {
				t.Fatalf("%q ago gave %v (now %v)", s, got, now)
			}
			return
		}
		back, perr := time.Parse(time.RFC3339Nano, got.Format(time.RFC3339Nano))
		if perr != nil || !back.Equal(got) {
			t.Fatalf("%q gave %v, which does not print back (%v)", s, got, perr)
		}
	})
}
