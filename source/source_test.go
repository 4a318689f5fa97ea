package source

import (
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/event"
)

// FuzzTriggerSpecValidate checks that whatever passes validation is safe to
// splice into SQL as an identifier: no quotes, separators or whitespace.
func FuzzTriggerSpecValidate(f *testing.F) {
	f.Add("listings", "listing", "id", "a,b", "secret")
	f.Add("public.listings", "listing", "id", "", "")
	f.Add(`x"; DROP TABLE y; --`, "e", "k", "", "")
	f.Fuzz(func(t *testing.T, table, entity, key, cols, exclude string) {
		spec := TriggerSpec{Table: table, Entity: entity, KeyColumn: key, Columns: split(cols), ExcludeColumns: split(exclude)}
		if spec.Validate() != nil {
			return
		}
		for _, s := range append([]string{table, entity, key}, append(spec.Columns, spec.ExcludeColumns...)...) {
			if strings.ContainsAny(s, "\"'`; \t\n\\-()") {
				t.Fatalf("validated spec holds unsafe name %q", s)
			}
		}
	})
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func TestSnapshotSpecDefaultsAndValidation(t *testing.T) {
	s := SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"}.WithDefaults()
	if s.VersionColumn != VersionColumn || s.PageSize != 1000 {
		t.Fatalf("defaults: %+v", s)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := s
	bad.Where = "1=1; DROP TABLE listings"
	if bad.Validate() == nil {
		t.Fatal("a where condition with ';' was accepted")
	}
	bad = s
	bad.Columns, bad.ExcludeColumns = []string{"a"}, []string{"a"}
	if bad.Validate() == nil {
		t.Fatal("a column both included and excluded was accepted")
	}
}

func TestRowEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	ev := Row{ID: 7, Entity: "listing", Key: "k", Version: 3, Op: event.OpDelete, Occurred: at}.Event()
	if ev.ID != "outbox-7" || ev.OccurredAt == nil || !ev.OccurredAt.Equal(at) || ev.OccurredAt.Location() != time.UTC || ev.Data != nil {
		t.Fatalf("event %+v", ev)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
}
