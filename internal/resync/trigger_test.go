package resync_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/source"
	"github.com/eventsync/eventsync/store/memory"
)

// recorder is a bus.Publisher that keeps the events it is given.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
}

func (r *recorder) Publish(_ context.Context, _ bus.Stream, msgs ...bus.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range msgs {
		ev, err := event.Parse(m.Body, 0)
		if err != nil {
			return err
		}
		r.events = append(r.events, ev)
	}
	return nil
}

// TestExcludedColumnsComeFromTheTrigger: the outbox trigger on listings
// excludes secret (pgTable). A resync and a verify not told so exclude it
// all the same, told the same list in another order they run, and told
// another list they stop before publishing anything, naming both lists
// and the fix.
func TestExcludedColumnsComeFromTheTrigger(t *testing.T) {
	t.Parallel()
	const rows = 25
	src, _ := pgTable(t, rows)
	ctx := context.Background()

	trig, ok, err := src.Trigger(ctx, "listings")
	if err != nil || !ok || trig.Entity != "listing" || trig.KeyColumn != "id" || len(trig.ExcludeColumns) != 1 || trig.ExcludeColumns[0] != "secret" {
		t.Fatalf("Trigger = %+v, %v, %v; want listing/id excluding secret", trig, ok, err)
	}

	untold := spec()
	untold.ExcludeColumns = nil
	pub := &recorder{}
	if _, err := resync.Run(ctx, src, pub, memory.New(memory.Config{}), untold, resync.WithLogger(quiet)); err != nil {
		t.Fatal(err)
	}
	if len(pub.events) != rows {
		t.Fatalf("published %d events, want %d", len(pub.events), rows)
	}
	for _, ev := range pub.events {
		if strings.Contains(string(ev.Data), "secret") || strings.Contains(string(ev.Data), `"pw"`) || !strings.Contains(string(ev.Data), "title") {
			t.Fatalf("resync without the excluded columns published %s", ev.Data)
		}
	}

	reordered := spec()
	reordered.ExcludeColumns = []string{"secret", "secret"}
	reordered.RunID = "same-list"
	if _, err := resync.Run(ctx, src, &recorder{}, memory.New(memory.Config{}), reordered, resync.WithLogger(quiet)); err != nil {
		t.Fatalf("the trigger's own list: %v", err)
	}

	other := spec()
	other.ExcludeColumns = []string{"price"}
	other.RunID = "other-list"
	pub = &recorder{}
	_, err = resync.Run(ctx, src, pub, memory.New(memory.Config{}), other, resync.WithLogger(quiet))
	if !errors.Is(err, source.ErrTriggerMismatch) || len(pub.events) != 0 {
		t.Fatalf("another list: err %v, %d events published; want ErrTriggerMismatch and nothing published", err, len(pub.events))
	}
	for _, want := range []string{"[price]", "[secret]", "listings", "leave the list out", "install-trigger"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	var items int
	table := verify.Table{Source: src, Spec: source.SnapshotSpec{Table: "listings", Entity: "listing", KeyColumn: "id"}}
	if err := table.Each(ctx, func(it verify.Item) error {
		items++
		if strings.Contains(string(it.Data), "secret") {
			t.Fatalf("verify without the excluded columns read %s", it.Data)
		}
		return nil
	}); err != nil || items != rows {
		t.Fatalf("verify read %d items (%v), want %d", items, err, rows)
	}
	table.Spec.KeyColumn = "title"
	if err := table.Each(ctx, func(verify.Item) error { return nil }); !errors.Is(err, source.ErrTriggerMismatch) || !strings.Contains(err.Error(), `"id"`) {
		t.Fatalf("verify keyed by another column: %v", err)
	}
}
