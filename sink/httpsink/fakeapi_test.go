package httpsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
)

func startFakeAPI(t *testing.T) (*fakeapi.Running, *httpsink.Sink) {
	t.Helper()
	api := runFakeAPI(t)
	return api, fakeAPISink(t, api, `listing: {collection: listings, list: {path: "/v1/listings?page={{.Page}}&per_page={{.PerPage}}", per_page: 7}}`)
}

func runFakeAPI(t *testing.T) *fakeapi.Running {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	return api
}

// fakeAPISink is a sink of the entity given in YAML flow style (listing:
// {...}) against api.
func fakeAPISink(t *testing.T, api *fakeapi.Running, entity string) *httpsink.Sink {
	t.Helper()
	cfg, err := httpsink.ParseConfig([]byte(fmt.Sprintf(`
defaults: {base_url: %q, timeout: 5s}
entities:
  %s
`, api.URL, entity)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpsink.New(cfg, httpsink.WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// The one-line collection config drives the real fake API through a full
// lifecycle: the default routes, body and paths match what it serves.
func TestAgainstFakeAPI(t *testing.T) {
	t.Parallel()
	api, s := startFakeAPI(t)
	ctx := context.Background()

	const n = 20
	ids := map[string]string{} // key → remote id
	for i := range n {
		key := fmt.Sprintf("key/%d ?", i) // must survive path and query escaping
		id, err := s.Create(ctx, sink.Record{Entity: "listing", Key: key, Version: 1, Data: json.RawMessage(fmt.Sprintf(`{"title":"t%d"}`, i))})
		if err != nil {
			t.Fatalf("Create %s: %v", key, err)
		}
		ids[key] = id
	}
	key0 := "key/0 ?"
	rec, ok := api.Record("listings", ids[key0])
	if !ok || rec.ExternalID() != key0 || rec["title"] != "t0" || fmt.Sprint(rec["version"]) != "1" {
		t.Fatalf("remote record = %v, %v", rec, ok)
	}

	if err := s.Update(ctx, ids[key0], sink.Record{Entity: "listing", Key: key0, Version: 2, Data: json.RawMessage(`{"title":"new"}`)}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if rec, _ := api.Record("listings", ids[key0]); rec["title"] != "new" || fmt.Sprint(rec["version"]) != "2" {
		t.Errorf("after update remote record = %v", rec)
	}

	found, err := s.Lookup(ctx, "listing", key0)
	if err != nil || len(found) != 1 || found[0] != ids[key0] {
		t.Fatalf("Lookup = %v, %v; want [%s]", found, err, ids[key0])
	}
	if none, err := s.Lookup(ctx, "listing", "absent"); err != nil || len(none) != 0 {
		t.Fatalf("Lookup(absent) = %v, %v", none, err)
	}

	// 20 records at 7 per page: three pages, every record once.
	listed := map[string]string{}
	err = s.List(ctx, "listing", func(r sink.RemoteRecord) error {
		if _, dup := listed[r.Key]; dup {
			return fmt.Errorf("key %q listed twice", r.Key)
		}
		listed[r.Key] = r.RemoteID
		return nil
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if fmt.Sprint(sorted(listed)) != fmt.Sprint(sorted(ids)) {
		t.Errorf("List = %v\nwant %v", listed, ids)
	}

	if err := s.Delete(ctx, "listing", ids[key0]); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(ctx, "listing", ids[key0]); !errors.Is(err, sink.ErrNotFound) {
		t.Errorf("second Delete = %v; want sink.ErrNotFound", err)
	}
	if err := s.Update(ctx, ids[key0], sink.Record{Entity: "listing", Key: key0, Version: 3, Data: json.RawMessage(`{}`)}); !errors.Is(err, sink.ErrNotFound) {
		t.Errorf("Update after delete = %v; want sink.ErrNotFound", err)
	}
	st := api.Stats()
	if st.DuplicateRecords != 0 || st.StaleWrites != 0 || st.Records["listings"] != n-1 {
		t.Errorf("fake API stats = %+v", st)
	}
}

func TestAgainstFakeAPIFaults(t *testing.T) {
	t.Parallel()
	api, s := startFakeAPI(t)
	ctx := context.Background()
	rec := sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)}

	api.StartOutage(time.Minute)
	_, err := s.Create(ctx, rec)
	retry, after := sink.Retryable(err)
	if !retry || after <= 0 || after > time.Minute {
		t.Fatalf("during outage: %v → retry %v after %v; want retryable with Retry-After ≤ 1m", err, retry, after)
	}
	api.StartOutage(0)

	if err := api.SetFaults(fakeapi.Faults{RateLimit: 1, Burst: 1}); err != nil {
		t.Fatal(err)
	}
	var limited error
	for range 5 {
		if _, err := s.Lookup(ctx, "listing", "k"); err != nil {
			limited = err
			break
		}
	}
	var se *sink.Error
	if !errors.As(limited, &se) || se.Status != 429 || !se.Retryable || se.RetryAfter <= 0 {
		t.Fatalf("rate limited: %v; want retryable 429 with Retry-After", limited)
	}
	if records := api.Stats().Records["listings"]; records != 0 {
		t.Errorf("refused calls created %d records", records)
	}
}

func sorted(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
