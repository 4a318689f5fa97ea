package httpsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eventsync/eventsync/sink"
)

// batch: {max_items: 100} alone drives the real fake API's bulk endpoints:
// the default wire formats agree, each item's status is judged like a
// single call's, and a refusal of the whole batch fails every item.
func TestBatchAgainstFakeAPI(t *testing.T) {
	t.Parallel()
	api := runFakeAPI(t)
	s := fakeAPISink(t, api, `listing: {collection: listings, batch: {max_items: 100}}`)
	ctx := context.Background()
	if n := s.MaxBatch("listing", sink.OpUpdate); n != 100 {
		t.Fatalf("MaxBatch = %d", n)
	}

	const n = 100
	items := make([]sink.BatchItem, n)
	for i := range items {
		items[i] = sink.BatchItem{Record: sink.Record{Entity: "listing", Key: fmt.Sprintf("key/%d ?", i), Version: 1,
			Data: json.RawMessage(fmt.Sprintf(`{"title":"t%d"}`, i))}}
	}
	res, err := s.WriteBatch(ctx, "listing", sink.OpCreate, items)
	if err != nil || len(res) != n {
		t.Fatalf("create: %d results, %v", len(res), err)
	}
	ids := make([]string, n)
	for i, r := range res {
		if r.Err != nil || r.RemoteID == "" {
			t.Fatalf("create item %d: %+v", i, r)
		}
		ids[i] = r.RemoteID
		if rec, ok := api.Record("listings", r.RemoteID); !ok || rec.ExternalID() != items[i].Record.Key || rec["title"] != fmt.Sprintf("t%d", i) {
			t.Fatalf("record %s = %v, %v; want key %q", r.RemoteID, rec, ok, items[i].Record.Key)
		}
	}

	// Update three, one of them gone.
	upd := []sink.BatchItem{
		{RemoteID: ids[0], Record: sink.Record{Entity: "listing", Key: items[0].Record.Key, Version: 2, Data: json.RawMessage(`{"title":"new"}`)}},
		{RemoteID: "no-such-id", Record: sink.Record{Entity: "listing", Key: "gone", Version: 2, Data: json.RawMessage(`{}`)}},
		{RemoteID: ids[1], Record: sink.Record{Entity: "listing", Key: items[1].Record.Key, Version: 2, Data: json.RawMessage(`{"title":"new1"}`)}},
	}
	res, err = s.WriteBatch(ctx, "listing", sink.OpUpdate, upd)
	if err != nil || len(res) != 3 || res[0].Err != nil || !errors.Is(res[1].Err, sink.ErrNotFound) || res[2].Err != nil {
		t.Fatalf("update = %+v, %v; want ok, ErrNotFound, ok", res, err)
	}
	if rec, _ := api.Record("listings", ids[0]); rec["title"] != "new" || fmt.Sprint(rec["version"]) != "2" {
		t.Errorf("record after update = %v", rec)
	}

	// An item the API refuses (external_id not a string) is that item's
	// permanent 400, with the API's message.
	bad := []sink.BatchItem{{Record: sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)}}}
	sBad := fakeAPISink(t, api, `listing: {collection: listings, batch: {max_items: 5, create: {body: '{"items": [{{range $i, $it := .Items}}{{if $i}},{{end}}{"external_id": 7}{{end}}]}'}}}`)
	res, err = sBad.WriteBatch(ctx, "listing", sink.OpCreate, bad)
	var se *sink.Error
	if err != nil || !errors.As(res[0].Err, &se) || se.Status != 400 || se.Retryable || se.Body == "" {
		t.Fatalf("invalid item = %+v, %v (%+v); want a permanent 400 with the API's message", res, err, se)
	}

	// Delete two, twice: 204 then 404.
	del := []sink.BatchItem{{RemoteID: ids[2], Record: sink.Record{Entity: "listing", Key: items[2].Record.Key}}, {RemoteID: ids[2], Record: sink.Record{Entity: "listing", Key: items[2].Record.Key}}}
	res, err = s.WriteBatch(ctx, "listing", sink.OpDelete, del)
	if err != nil || res[0].Err != nil || !errors.Is(res[1].Err, sink.ErrNotFound) {
		t.Fatalf("delete = %+v, %v; want ok, ErrNotFound", res, err)
	}
	if _, ok := api.Record("listings", ids[2]); ok {
		t.Errorf("record %s still there", ids[2])
	}

	// A refusal of the whole batch: every item fails with the call.
	if err := api.FailNext(1, 503, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	res, err = s.WriteBatch(ctx, "listing", sink.OpUpdate, upd[:1])
	if retry, after := sink.Retryable(err); res != nil || !retry || after != 3*time.Second {
		t.Fatalf("whole-call 503 = %+v, %v (retry %v after %v)", res, err, retry, after)
	}

	st := api.Stats()
	// create, update, invalid create, delete, refused update; 100 created,
	// 2 updated, 1 deleted.
	if st.BatchRequests != 5 || st.BatchItems != n+3 {
		t.Errorf("stats: %d batch requests, %d items written; want 5, %d", st.BatchRequests, st.BatchItems, n+3)
	}
	if st.DuplicateRecords != 0 {
		t.Errorf("%d duplicate records", st.DuplicateRecords)
	}
}
