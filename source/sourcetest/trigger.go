package sourcetest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/source"
)

// testSnapshotFiltersLikeTheTrigger: a source that records its triggers
// (source.TriggerReader) reports the spec a trigger was installed with,
// and a snapshot not told the excluded columns excludes the trigger's; one
// told another list is refused (ErrTriggerMismatch) before reading a row;
// after RemoveTrigger the snapshot takes the lists as given.
func testSnapshotFiltersLikeTheTrigger(t *testing.T, env Env) {
	tr, ok := env.Source.(source.TriggerReader)
	if !ok {
		t.Skip("the source does not record its triggers (source.TriggerReader)")
	}
	ctx := ctxT(t)
	if err := env.Source.Install(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, env.DB, `CREATE TABLE listings (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret TEXT, phone TEXT)`)
	exec(t, env.DB, `INSERT INTO listings (id, name, secret, phone) VALUES (1, 'a', 'pw', '555')`)
	if _, ok, err := tr.Trigger(ctx, "listings"); ok || err != nil {
		t.Fatalf("Trigger before install: %v, %v; want none", ok, err)
	}
	spec := source.TriggerSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret", "phone"}}
	if err := env.Source.InstallTrigger(ctx, spec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := tr.Trigger(ctx, "listings")
	if err != nil || !ok || got.Entity != "listing" || got.KeyColumn != "id" || !slices.Equal(got.ExcludeColumns, spec.ExcludeColumns) || len(got.Columns) != 0 {
		t.Fatalf("Trigger = %+v, %v, %v; want the installed spec", got, ok, err)
	}
	snapshot := func(s source.SnapshotSpec) ([]event.Event, error) {
		var out []event.Event
		err := env.Source.Snapshot(ctx, s, func(page []event.Event, _ string) error { out = append(out, page...); return nil })
		return out, err
	}
	evs, err := snapshot(source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("snapshot not told the excluded columns: %v, %d events", err, len(evs))
	}
	if data := string(evs[0].Data); strings.Contains(data, "secret") || strings.Contains(data, "phone") || !strings.Contains(data, "name") {
		t.Fatalf("snapshot not told the excluded columns read %s", data)
	}
	if _, err := snapshot(source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"phone", "secret"}}); err != nil {
		t.Fatalf("snapshot told the trigger's list in another order: %v", err)
	}
	_, err = snapshot(source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id", ExcludeColumns: []string{"secret"}})
	if !errors.Is(err, source.ErrTriggerMismatch) || !strings.Contains(err.Error(), "[secret]") || !strings.Contains(err.Error(), "[secret, phone]") {
		t.Fatalf("snapshot told another list: %v; want ErrTriggerMismatch naming both lists", err)
	}
	if _, err := env.Source.Count(ctx, source.SnapshotSpec{Table: "listings", Entity: "host", KeyColumn: "id"}); !errors.Is(err, source.ErrTriggerMismatch) {
		t.Fatalf("count of another entity: %v; want ErrTriggerMismatch", err)
	}
	if err := env.Source.RemoveTrigger(ctx, "listings"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := tr.Trigger(ctx, "listings"); ok || err != nil {
		t.Fatalf("Trigger after remove: %v, %v; want none", ok, err)
	}
	if evs, err := snapshot(source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"}); err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Data), "phone") {
		t.Fatalf("snapshot after RemoveTrigger: %v %v; want the lists as given (none)", evs, err)
	}
}
