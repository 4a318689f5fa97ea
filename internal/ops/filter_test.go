package ops

import (
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
)

func TestParseFilter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f, err := ParseFilter(FilterInput{Entity: " listing ", Reason: "422", Stream: "resync", Since: "90m", Until: "2025-03-01T11:59:00Z", Limit: "20", IDs: []string{"a", " ", "b "}}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := bus.ParkedFilter{Entity: "listing", ReasonContains: "422", Stream: bus.Resync, Since: now.Add(-90 * time.Minute),
		Until: time.Date(2025, 3, 1, 11, 59, 0, 0, time.UTC), Limit: 20, IDs: []string{"a", "b"}}
	if f.Entity != want.Entity || f.ReasonContains != want.ReasonContains || f.Stream != want.Stream || !f.Since.Equal(want.Since) ||
		!f.Until.Equal(want.Until) || f.Limit != want.Limit || strings.Join(f.IDs, ",") != "a,b" {
		t.Errorf("ParseFilter = %+v, want %+v", f, want)
	}
	if f, err := ParseFilter(FilterInput{}, now); err != nil || !Empty(f) {
		t.Errorf("empty input = %+v, %v; want the empty filter", f, err)
	}
	for _, bad := range []struct {
		in   FilterInput
		want string
	}{
		{FilterInput{Stream: "parked"}, "stream: "},
		{FilterInput{Since: "yesterday"}, "since: "},
		{FilterInput{Until: "-5m"}, "until: "},
		{FilterInput{Limit: "-1"}, "limit: "},
		{FilterInput{Limit: "ten"}, "limit: "},
		{FilterInput{Entity: strings.Repeat("x", 300)}, "entity: longer"},
		{FilterInput{IDs: []string{strings.Repeat("x", 300)}}, "id: longer"},
	} {
		if _, err := ParseFilter(bad.in, now); err == nil || !strings.HasPrefix(err.Error(), bad.want) {
			t.Errorf("ParseFilter(%+v) = %v, want an error starting %q", bad.in, err, bad.want)
		}
	}
}

// FuzzParseFilter feeds outside input (a query string or form of the
// console) to ParseFilter: it never panics, and what it accepts is within
// its bounds and matches a message consistently.
func FuzzParseFilter(f *testing.F) {
	f.Add("listing", "422", "live", "1h", "2025-01-01T00:00:00Z", "10", "abc")
	f.Add("", "", "", "", "", "", "")
	f.Add("x", "\x00", "resync", "-1s", "9999999h", "99999999999999999999", strings.Repeat("i", 300))
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, entity, reason, stream, since, until, limit, id string) {
		fl, err := ParseFilter(FilterInput{Entity: entity, Reason: reason, Stream: stream, Since: since, Until: until, Limit: limit, IDs: []string{id}}, now)
		if err != nil {
			return
		}
		if fl.Limit < 0 || fl.Limit > MaxLimit || len(fl.IDs) > 1 {
			t.Fatalf("accepted out of bounds: %+v", fl)
		}
		if fl.Stream != "" && fl.Stream != bus.Live && fl.Stream != bus.Resync {
			t.Fatalf("accepted stream %q", fl.Stream)
		}
		m := bus.ParkedMessage{ID: id, Stream: fl.Stream, Reason: reason, ParkedAt: now, Body: []byte(`{"entity":"` + entity + `"}`)}
		_ = fl.Match(m) // must not panic
	})
}
