package verify_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/store"
)

// TestRepairThroughThePipeline drifts a converged deployment in every
// repairable way, runs Repair, applies the published events with the real
// apply algorithm from a real RabbitMQ queue, and verifies again.
func TestRepairThroughThePipeline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	a := newPostgresApp(t)
	a.insert(t, 12)
	a.syncAll(t)
	ap := a.applier(t)

	// missing, version already applied: only a flagged repair re-creates it.
	call(t, a.api, "DELETE", "/v1/listings/"+remoteID(t, a.api, "k-004"), "")
	// differing, version already applied.
	call(t, a.api, "PUT", "/v1/listings/"+remoteID(t, a.api, "k-002"), `{"external_id":"k-002","title":"tampered"}`)
	// differing because the source moved on (a change the relay did not carry).
	a.exec(t, `UPDATE listings SET title = 'Renamed' WHERE id = 'k-003'`)
	// missing, never synced.
	a.exec(t, `INSERT INTO listings (id, title, price, tags) VALUES ('k-100', 'New', 1, '{}')`)
	// extra, unknown to the store.
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"z-ghost","title":"Ghost"}`)
	// extra, applied and not deleted in the store.
	a.exec(t, `DELETE FROM listings WHERE id = 'k-005'`)
	// extra, applied, with a newer write in doubt (its worker crashed
	// after taking the lease): a delete at or below it would be skipped.
	a.exec(t, `DELETE FROM listings WHERE id = 'k-007'`)
	doubt, _, err := a.store.Acquire(ctx, store.Key{Entity: "listing", Key: "k-007"}, "crashed", time.Minute, 500)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Release(ctx, doubt); err != nil {
		t.Fatal(err)
	}
	// extra although the store holds its tombstone: re-created by hand.
	if out := ap.Apply(ctx, []byte(`{"id":"d6","entity":"listing","key":"k-006","version":1000,"op":"delete"}`), 1); out.Result != engine.ResultApplied {
		t.Fatalf("delete k-006: %+v", out)
	}
	a.exec(t, `DELETE FROM listings WHERE id = 'k-006'`)
	call(t, a.api, "POST", "/v1/listings", `{"external_id":"k-006","title":"Listing 6"}`)

	res := check(t, a.config())
	want := verify.Counts{Expected: 10, Remote: 12, Matching: 6, Missing: 2, Extra: 4, Differing: 2}
	if res.Report.Counts != want {
		t.Fatalf("before repair: counts %+v, want %+v", res.Report.Counts, want)
	}

	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: quiet})
	var planned []string
	dry, err := res.Repair(ctx, verify.RepairOptions{Store: a.store, DryRun: true, OnAction: func(x verify.Action) {
		planned = append(planned, verify.FormatAction(x, true))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := b.Stats(ctx, bus.Live); err != nil || st.Ready != 0 {
		t.Fatalf("dry run published: %+v %v", st, err)
	}
	var done []verify.Action
	sum, err := res.Repair(ctx, verify.RepairOptions{Store: a.store, Publisher: b, OnAction: func(x verify.Action) { done = append(done, x) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Upserts != 4 || sum.Deletes != 4 || sum.Skipped != 0 || sum.MarkRepair != 5 {
		t.Fatalf("summary %+v, want 4 upserts, 4 deletes, 5 flagged (4 upserts + the tombstone)", sum)
	}
	dry.DryRun = false
	if dry != sum {
		t.Errorf("dry run planned %+v, the real run did %+v", dry, sum)
	}
	if len(planned) != len(done) || !strings.HasPrefix(planned[0], "would publish") {
		t.Errorf("dry run lines %q", planned)
	}
	byKey := map[string]verify.Action{}
	for _, x := range done {
		byKey[x.Key] = x
	}
	if x := byKey["k-006"]; x.Op != event.OpDelete || x.Version != 1000 || !x.MarkRepair {
		t.Errorf("k-006 (tombstone): %+v, want a flagged delete at version 1000", x)
	}
	if x := byKey["z-ghost"]; x.Op != event.OpDelete || x.Version != 1 || x.MarkRepair {
		t.Errorf("z-ghost (unknown): %+v, want a delete at version 1", x)
	}
	if x := byKey["k-007"]; x.Op != event.OpDelete || x.Version != 501 || x.MarkRepair {
		t.Errorf("k-007 (a write in doubt at 500): %+v, want a delete at version 501", x)
	}
	if x := byKey["k-004"]; x.Op != event.OpUpsert || x.Reason != "missing" || !x.MarkRepair {
		t.Errorf("k-004: %+v", x)
	}

	// The worker's side: consume and apply until every event is settled.
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	results := map[engine.Result]int{}
	for settled := 0; settled < len(done); {
		var d bus.Delivery
		select {
		case d = <-sub.Deliveries():
		case <-ctx.Done():
			t.Fatalf("only %d of %d corrective events settled: %v", settled, len(done), results)
		}
		out := ap.Apply(ctx, d.Body(), d.Attempt())
		results[out.Result]++
		switch out.Result {
		case engine.ResultRetried, engine.ResultLocked:
			if err := d.Retry(ctx, out.Delay, out.Reason); err != nil {
				t.Fatal(err)
			}
			continue
		case engine.ResultParked:
			t.Fatalf("parked: %s (%s)", out.Reason, d.Body())
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		settled++
	}
	if results[engine.ResultRepaired] != 3 || results[engine.ResultApplied] != 5 {
		t.Errorf("outcomes %v, want 3 repaired (k-002, k-004, k-006) and 5 applied", results)
	}
	after := check(t, a.config()).Report
	if !after.Converged {
		t.Fatalf("not converged after repair: %+v", after.Counts)
	}
}

func TestDeleteDuplicates(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newSQLiteApp(t)
	a.insert(t, 3)
	// An older record for k-001 that eventsync does not know: the sync
	// then creates the one the store maps.
	older := call(t, a.api, "POST", "/v1/listings", `{"external_id":"k-001","title":"Listing 1","price":11.5,"tags":`+a.tags(true)+`}`)
	a.syncAll(t)
	res := check(t, a.config())
	if res.Report.Counts.Duplicated != 1 {
		t.Fatalf("counts %+v, want one duplicated key", res.Report.Counts)
	}
	ids := res.Report.Samples.Duplicated[0].RemoteIDs
	if len(ids) != 2 || !strings.Contains(older, fmt.Sprintf("%q", ids[0])) {
		t.Fatalf("duplicated ids %v, want the older record %s first", ids, older)
	}
	lease, state, err := a.store.Acquire(ctx, store.Key{Entity: "listing", Key: "k-001"}, "probe", time.Second, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.store.Release(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if state.RemoteID != ids[1] {
		t.Fatalf("the store maps k-001 to %s, want the newer %s", state.RemoteID, ids[1])
	}

	// Without the store: keep the first listed (oldest).
	var plan []verify.DedupAction
	sum, err := res.DeleteDuplicates(ctx, verify.DedupOptions{DryRun: true, OnAction: func(x verify.DedupAction) { plan = append(plan, x) }})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Deleted != 1 || plan[0].Keep != ids[0] || plan[0].Why != "listed first" {
		t.Fatalf("plan without store %+v %+v", sum, plan)
	}
	// With the store: keep the record the workers update.
	plan = nil
	sum, err = res.DeleteDuplicates(ctx, verify.DedupOptions{Store: a.store, DryRun: true, OnAction: func(x verify.DedupAction) { plan = append(plan, x) }})
	if err != nil || plan[0].Keep != ids[1] || !slices.Equal(plan[0].Delete, ids[:1]) {
		t.Fatalf("plan with store %+v %+v %v", sum, plan, err)
	}
	if n := len(a.api.Records("listings")); n != 4 {
		t.Fatalf("a dry run deleted records: %d left, want 4", n)
	}
	sum, err = res.DeleteDuplicates(ctx, verify.DedupOptions{Store: a.store, Sink: a.sink})
	if err != nil || sum.Deleted != 1 || sum.Failed != 0 {
		t.Fatalf("delete duplicates: %+v %v", sum, err)
	}
	if got := remoteID(t, a.api, "k-001"); got != ids[1] {
		t.Fatalf("kept %s, want the mapped %s", got, ids[1])
	}
	if rep := check(t, a.config()).Report; !rep.Converged {
		t.Fatalf("not converged after removing duplicates: %+v", rep.Counts)
	}
}
