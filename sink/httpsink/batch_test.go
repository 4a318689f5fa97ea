package httpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/hmacsig"
	"github.com/eventsync/eventsync/sink"
)

// bulkStore is an API with the default bulk wire format: POST
// {collection}/batch/{create,update,delete}. A record whose data has a
// numeric "fail" member is answered with that status for its item, and
// "noid" makes a create's result carry no id.
type bulkStore struct {
	mu   sync.Mutex
	next int
	recs map[string]map[string]any
}

func newBulkAPI(t *testing.T) (*testAPI, *bulkStore) {
	st := &bulkStore{recs: map[string]map[string]any{}}
	return newTestAPI(t, st.serve), st
}

type bulkResult struct {
	Status int    `json:"status"`
	ID     string `json:"id,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (st *bulkStore) serve(w http.ResponseWriter, r *http.Request) {
	st.mu.Lock()
	defer st.mu.Unlock()
	op, ok := strings.CutPrefix(r.URL.Path, "/v1/listings/batch/")
	if !ok || r.Method != http.MethodPost {
		http.Error(w, "no such route", http.StatusNotFound)
		return
	}
	var req struct {
		Items []json.RawMessage `json:"items"`
		IDs   []string          `json:"ids"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var results []bulkResult
	failed := func(rec map[string]any) (bulkResult, bool) {
		if n, ok := rec["fail"].(float64); ok {
			return bulkResult{Status: int(n), Error: fmt.Sprintf("refused %v", rec["external_id"])}, true
		}
		return bulkResult{}, false
	}
	switch op {
	case "create":
		for _, raw := range req.Items {
			var rec map[string]any
			_ = json.Unmarshal(raw, &rec)
			if res, bad := failed(rec); bad {
				results = append(results, res)
				continue
			}
			st.next++
			id := "r" + strconv.Itoa(st.next)
			st.recs[id] = rec
			if rec["noid"] != nil {
				id = ""
			}
			results = append(results, bulkResult{Status: 201, ID: id})
		}
	case "update":
		for _, raw := range req.Items {
			var it struct {
				ID     string         `json:"id"`
				Record map[string]any `json:"record"`
			}
			_ = json.Unmarshal(raw, &it)
			if res, bad := failed(it.Record); bad {
				results = append(results, res)
			} else if _, ok := st.recs[it.ID]; !ok {
				results = append(results, bulkResult{Status: 404, Error: "no record " + it.ID})
			} else {
				st.recs[it.ID] = it.Record
				results = append(results, bulkResult{Status: 200, ID: it.ID})
			}
		}
	case "delete":
		for _, id := range req.IDs {
			if _, ok := st.recs[id]; !ok {
				results = append(results, bulkResult{Status: 404, Error: "no record " + id})
				continue
			}
			delete(st.recs, id)
			results = append(results, bulkResult{Status: 204})
		}
	default:
		http.Error(w, "no such route", http.StatusNotFound)
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"results": results})
}

func (st *bulkStore) record(id string) (map[string]any, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	rec, ok := st.recs[id]
	return rec, ok
}

const batchYAML = `
defaults:
  base_url: BASE_URL
  timeout: 2s
entities:
  listing: {collection: listings, batch: {max_items: 100}}
`

func createItems(keys ...string) []sink.BatchItem {
	items := make([]sink.BatchItem, len(keys))
	for i, k := range keys {
		data, _ := json.Marshal(map[string]string{"title": "t " + k})
		items[i] = sink.BatchItem{Record: sink.Record{Entity: "listing", Key: k, Version: 1, Data: data}}
	}
	return items
}

// The default wire format round trip: batch: {max_items: 100} alone
// creates, updates and deletes through {collection}/batch/{op}, one
// result per item in order.
func TestBatchDefaultFormatRoundTrip(t *testing.T) {
	t.Parallel()
	api, st := newBulkAPI(t)
	var observed []string
	var mu sync.Mutex
	s := newSink(t, api.srv.URL, batchYAML, WithObserver(func(op, _ string, status int, _ time.Duration, _ error) {
		mu.Lock()
		observed = append(observed, fmt.Sprintf("%s %d", op, status))
		mu.Unlock()
	}))
	ctx := context.Background()
	for _, op := range []sink.Op{sink.OpCreate, sink.OpUpdate, sink.OpDelete} {
		if got := s.MaxBatch("listing", op); got != 100 {
			t.Errorf("MaxBatch(listing, %s) = %d; want 100", op, got)
		}
	}

	res, err := s.WriteBatch(ctx, "listing", sink.OpCreate, createItems("k1", `k"2/?`, "k3"))
	if err != nil || len(res) != 3 {
		t.Fatalf("create = %+v, %v", res, err)
	}
	for i, want := range []string{"r1", "r2", "r3"} {
		if res[i].Err != nil || res[i].RemoteID != want {
			t.Errorf("create result %d = %+v; want id %s", i, res[i], want)
		}
	}
	if rec, _ := st.record("r2"); rec["external_id"] != `k"2/?` || rec["title"] != `t k"2/?` || rec["version"] != 1.0 {
		t.Errorf("record r2 = %v", rec)
	}

	upd := []sink.BatchItem{
		{RemoteID: "r1", Record: sink.Record{Entity: "listing", Key: "k1", Version: 2, Data: json.RawMessage(`{"title":"new"}`)}},
		{RemoteID: "r9", Record: sink.Record{Entity: "listing", Key: "k9", Version: 2, Data: json.RawMessage(`{"title":"gone"}`)}},
	}
	res, err = s.WriteBatch(ctx, "listing", sink.OpUpdate, upd)
	if err != nil || len(res) != 2 || res[0].Err != nil || !errors.Is(res[1].Err, sink.ErrNotFound) {
		t.Fatalf("update = %+v, %v; want ok, ErrNotFound", res, err)
	}
	if rec, _ := st.record("r1"); rec["title"] != "new" || rec["version"] != 2.0 {
		t.Errorf("record r1 after update = %v", rec)
	}

	del := []sink.BatchItem{{RemoteID: "r1", Record: sink.Record{Entity: "listing", Key: "k1"}}, {RemoteID: "r1", Record: sink.Record{Entity: "listing", Key: "k1"}}}
	res, err = s.WriteBatch(ctx, "listing", sink.OpDelete, del)
	if err != nil || len(res) != 2 || res[0].Err != nil || !errors.Is(res[1].Err, sink.ErrNotFound) {
		t.Fatalf("delete = %+v, %v; want ok, ErrNotFound", res, err)
	}

	reqs := api.requests()
	want := []recorded{
		{Method: "POST", Path: "/v1/listings/batch/create", Body: `{"items":[{"title":"t k1","external_id":"k1","version":1},{"title":"t k\"2/?","external_id":"k\"2/?","version":1},{"title":"t k3","external_id":"k3","version":1}]}`},
		{Method: "POST", Path: "/v1/listings/batch/update", Body: `{"items":[{"id":"r1","record":{"title":"new","external_id":"k1","version":2}},{"id":"r9","record":{"title":"gone","external_id":"k9","version":2}}]}`},
		{Method: "POST", Path: "/v1/listings/batch/delete", Body: `{"ids":["r1","r1"]}`},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d requests; want %d", len(reqs), len(want))
	}
	for i, w := range want {
		if reqs[i].Method != w.Method || reqs[i].Path != w.Path || reqs[i].Body != w.Body {
			t.Errorf("request %d = %s %s %s\nwant %s %s %s", i, reqs[i].Method, reqs[i].Path, reqs[i].Body, w.Method, w.Path, w.Body)
		}
		if ct := reqs[i].Headers.Get("Content-Type"); ct != "application/json" {
			t.Errorf("request %d Content-Type %q", i, ct)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(observed, ",") != "batch_create 200,batch_update 200,batch_delete 200" {
		t.Errorf("observed %v", observed)
	}
}

// Batching is per operation: an entity without a batch block, an
// operation without a route (no collection to derive one), and one whose
// max_items is 1 all give the single call.
func TestBatchIsOptInPerOperation(t *testing.T) {
	t.Parallel()
	s := newSink(t, "http://127.0.0.1:1", `
defaults: {base_url: BASE_URL}
entities:
  plain: {collection: plains}
  custom:
    create: {method: POST, path: /c}
    update: {method: PUT, path: "/c/{{.RemoteID | path}}"}
    delete: {method: DELETE, path: "/c/{{.RemoteID | path}}"}
    batch: {max_items: 50, create: {path: /c/bulk}}
  nodelete:
    collection: things
    batch: {max_items: 20, update: {max_items: 5}, delete: {max_items: 1}}
`)
	cases := []struct {
		entity string
		op     sink.Op
		want   int
	}{
		{"plain", sink.OpCreate, 0}, {"plain", sink.OpUpdate, 0},
		{"custom", sink.OpCreate, 50}, {"custom", sink.OpUpdate, 0}, {"custom", sink.OpDelete, 0},
		{"nodelete", sink.OpCreate, 20}, {"nodelete", sink.OpUpdate, 5}, {"nodelete", sink.OpDelete, 1},
		{"absent", sink.OpCreate, 0}, {"custom", sink.Op("upsert"), 0},
	}
	for _, c := range cases {
		if got := s.MaxBatch(c.entity, c.op); got != c.want {
			t.Errorf("MaxBatch(%s, %s) = %d; want %d", c.entity, c.op, got, c.want)
		}
	}
	_, err := s.WriteBatch(context.Background(), "custom", sink.OpUpdate, []sink.BatchItem{{RemoteID: "r1", Record: sink.Record{Entity: "custom", Key: "k"}}})
	if err == nil || !strings.Contains(err.Error(), "sink.entities.custom.batch.update") {
		t.Errorf("WriteBatch without a route = %v; want an error naming the setting", err)
	}
	if retry, _ := sink.Retryable(err); retry {
		t.Errorf("WriteBatch without a route is retryable")
	}
}

// An API of another shape: its own route, a body template that wraps each
// item, its own answer layout (nested results, string statuses, numeric
// ids, error objects). Header templates naming one record are not sent
// with a batch; those that do not are.
func TestBatchCustomShape(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Records []map[string]any `json:"records"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		var out []string
		for i, rec := range req.Records {
			if rec["ref"] == "bad" {
				out = append(out, `{"code":"422","problem":{"message":"title missing"}}`)
				continue
			}
			out = append(out, fmt.Sprintf(`{"code":"200","record":{"uid":%d}}`, 700+i))
		}
		_, _ = fmt.Fprintf(w, `{"data":{"outcomes":[%s]}}`, strings.Join(out, ","))
	})
	s := newSink(t, api.srv.URL, `
defaults:
  base_url: BASE_URL
  headers: {Idempotency-Key: "{{.EventID}}", X-Entity: "e-{{.Entity}}"}
entities:
  contact:
    collection: contacts
    batch:
      max_items: 10
      create:
        path: /api/v2/bulk/{{.Entity}}s
        body: '{"records": [{{range $i, $it := .Items}}{{if $i}},{{end}}{"ref": {{json $it.Key}}, "fields": {{$it.DataJSON}}, "rev": {{$it.Version}}}{{end}}]}'
        results: data.outcomes
        status: code
        id: record.uid
        error: problem
      update:
        method: PATCH
        path: /api/v2/bulk/contacts
        body: '{"records": [{{range $i, $it := .Items}}{{if $i}},{{end}}{"uid": {{json $it.RemoteID}}, "ref": {{json $it.Key}}, "fields": {{json $it.Body}}}{{end}}]}'
        results: data.outcomes[]
        status: code
        error: problem.message
`)
	ctx := context.Background()
	items := []sink.BatchItem{
		{Record: sink.Record{Entity: "contact", Key: `a"1`, Version: 3, EventID: "ev1", Data: json.RawMessage(`{"name":"Ann"}`)}},
		{Record: sink.Record{Entity: "contact", Key: "bad", Version: 4, EventID: "ev2", Data: json.RawMessage(`{}`)}},
	}
	res, err := s.WriteBatch(ctx, "contact", sink.OpCreate, items)
	if err != nil || len(res) != 2 {
		t.Fatalf("create = %+v, %v", res, err)
	}
	if res[0].Err != nil || res[0].RemoteID != "700" {
		t.Errorf("result 0 = %+v; want id 700", res[0])
	}
	var se *sink.Error
	if !errors.As(res[1].Err, &se) || se.Status != 422 || se.Retryable || se.Body != `{"message":"title missing"}` {
		t.Errorf("result 1 = %v (%+v); want permanent 422 with the problem object", res[1].Err, se)
	}
	items[0].RemoteID, items[1].RemoteID = "700", "701"
	res, err = s.WriteBatch(ctx, "contact", sink.OpUpdate, items)
	if err != nil || res[0].Err != nil || !errors.As(res[1].Err, &se) || se.Body != "title missing" {
		t.Fatalf("update = %+v, %v", res, err)
	}

	reqs := api.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if r := reqs[0]; r.Method != "POST" || r.Path != "/api/v2/bulk/contacts" ||
		r.Body != `{"records": [{"ref": "a\"1", "fields": {"name":"Ann"}, "rev": 3},{"ref": "bad", "fields": {}, "rev": 4}]}` {
		t.Errorf("create request = %s %s %s", r.Method, r.Path, r.Body)
	}
	if r := reqs[1]; r.Method != "PATCH" ||
		r.Body != `{"records": [{"uid": "700", "ref": "a\"1", "fields": {"name":"Ann","external_id":"a\"1","version":3}},{"uid": "701", "ref": "bad", "fields": {"external_id":"bad","version":4}}]}` {
		t.Errorf("update request = %s %s %s", r.Method, r.Path, r.Body)
	}
	for _, r := range reqs {
		if r.Headers.Get("X-Entity") != "e-contact" || r.Headers.Get("Idempotency-Key") != "" {
			t.Errorf("headers %v; want X-Entity and no per-record Idempotency-Key", r.Headers)
		}
	}
}

// Each item's status is judged like a single call's.
func TestBatchItemErrors(t *testing.T) {
	t.Parallel()
	api, _ := newBulkAPI(t)
	s := newSink(t, api.srv.URL, strings.Replace(batchYAML, "timeout: 2s", "timeout: 2s\n  max_body_excerpt: 12", 1))
	ctx := context.Background()
	item := func(key, extra string) sink.BatchItem {
		return sink.BatchItem{RemoteID: "x", Record: sink.Record{Entity: "listing", Key: key, Version: 1, Data: json.RawMessage(`{"t":1` + extra + `}`)}}
	}
	cases := []struct {
		op        sink.Op
		fail      int
		notFound  bool
		retryable bool
	}{
		{sink.OpCreate, 404, false, false},
		{sink.OpUpdate, 404, true, false},
		{sink.OpUpdate, 410, true, false},
		{sink.OpCreate, 409, false, false},
		{sink.OpUpdate, 422, false, false},
		{sink.OpCreate, 400, false, false},
		{sink.OpCreate, 429, false, true},
		{sink.OpUpdate, 503, false, true},
		{sink.OpCreate, 500, false, true},
		{sink.OpUpdate, 408, false, true},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s_%d", c.op, c.fail), func(t *testing.T) {
			items := []sink.BatchItem{item("ok", ""), item("failing-key", fmt.Sprintf(`,"fail":%d`, c.fail))}
			if c.op == sink.OpUpdate {
				// the store knows no "x": make the first item's update land
				r, err := s.WriteBatch(ctx, "listing", sink.OpCreate, items[:1])
				if err != nil || r[0].Err != nil {
					t.Fatal(r, err)
				}
				items[0].RemoteID = r[0].RemoteID
			}
			res, err := s.WriteBatch(ctx, "listing", c.op, items)
			if err != nil || len(res) != 2 || res[0].Err != nil {
				t.Fatalf("WriteBatch = %+v, %v", res, err)
			}
			err = res[1].Err
			var se *sink.Error
			if !errors.As(err, &se) || se.Status != c.fail || se.Op != string(c.op) {
				t.Fatalf("item error = %v (%+v); want a *sink.Error with status %d", err, se, c.fail)
			}
			if errors.Is(err, sink.ErrNotFound) != c.notFound {
				t.Errorf("ErrNotFound = %v; want %v", !c.notFound, c.notFound)
			}
			if retry, _ := sink.Retryable(err); retry != c.retryable {
				t.Errorf("Retryable = %v; want %v", retry, c.retryable)
			}
			if se.Body != "refused fail" {
				t.Errorf("Body %q; want the item's error cut to max_body_excerpt (12)", se.Body)
			}
		})
	}
	// A created item without an id may exist: retryable, so the engine's
	// intent looks it up.
	res, err := s.WriteBatch(ctx, "listing", sink.OpCreate, []sink.BatchItem{item("a", ""), item("b", `,"noid":true`)})
	if err != nil || res[0].Err != nil || res[0].RemoteID == "" {
		t.Fatalf("WriteBatch = %+v, %v", res, err)
	}
	var se *sink.Error
	if !errors.As(res[1].Err, &se) || se.Status != 201 || !se.Retryable || !strings.Contains(res[1].Err.Error(), "sink.entities.listing.batch.create.id") {
		t.Errorf("create without id = %v (%+v); want retryable, naming the id setting", res[1].Err, se)
	}
}

// A failure of the whole call is returned like a single call's, with no
// results: every item is in doubt.
func TestBatchWholeCallFailures(t *testing.T) {
	t.Parallel()
	date := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	two := createItems("k1", "k2")
	cases := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		retryable  bool
		retryAfter time.Duration
		mention    string
	}{
		{"503 with Retry-After", 503, map[string]string{"Retry-After": "7"}, "busy", true, 7 * time.Second, "busy"},
		{"429 with a date", 429, map[string]string{"Retry-After": date.Add(time.Minute).Format(http.TimeFormat)}, "slow down", true, time.Minute, "slow down"},
		{"500", 500, nil, "oops", true, 0, "oops"},
		{"408", 408, nil, "", true, 0, "408"},
		{"400 permanent", 400, map[string]string{"Retry-After": "7"}, "bad batch", false, 0, "bad batch"},
		{"404 of the route is no ErrNotFound", 404, nil, "no such route", false, 0, "no such route"},
		{"413", 413, nil, "too large", false, 0, "too large"},
		{"not JSON", 200, nil, "<html>", false, 0, "batch answer is not valid JSON"},
		{"no results array", 200, nil, `{"data":[]}`, false, 0, `sink.entities.listing.batch.create.results "results"`},
		{"fewer results", 200, nil, `{"results":[{"status":201,"id":"a"}]}`, false, 0, "1 results at sink.entities.listing.batch.create.results"},
		{"more results", 200, nil, `{"results":[{"status":201,"id":"a"},{"status":201,"id":"b"},{"status":201,"id":"c"}]}`, false, 0, "3 results"},
		{"no status", 200, nil, `{"results":[{"status":201,"id":"a"},{"id":"b"}]}`, false, 0, `result 1 has no HTTP status (100-599) at sink.entities.listing.batch.create.status`},
		{"odd status", 200, nil, `{"results":[{"status":201,"id":"a"},{"status":2010}]}`, false, 0, "result 1 has no HTTP status"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			api := statusAPI(t, c.status, c.header, c.body)
			s := newSink(t, api.srv.URL, batchYAML)
			s.now = func() time.Time { return date }
			res, err := s.WriteBatch(context.Background(), "listing", sink.OpCreate, two)
			if res != nil || err == nil {
				t.Fatalf("WriteBatch = %+v, %v; want no results and an error", res, err)
			}
			var se *sink.Error
			if !errors.As(err, &se) || se.Status != c.status || se.Op != "create" {
				t.Fatalf("err = %v (%+v); want a *sink.Error of create with status %d", err, se, c.status)
			}
			if errors.Is(err, sink.ErrNotFound) {
				t.Errorf("whole-call error is ErrNotFound")
			}
			retry, after := sink.Retryable(err)
			if retry != c.retryable || after != c.retryAfter {
				t.Errorf("Retryable = %v, %v; want %v, %v", retry, after, c.retryable, c.retryAfter)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("err %q does not mention %q", err, c.mention)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		s := newSink(t, api.srv.URL, strings.Replace(batchYAML, "timeout: 2s", "timeout: 50ms", 1))
		res, err := s.WriteBatch(context.Background(), "listing", sink.OpUpdate, []sink.BatchItem{{RemoteID: "r1", Record: two[0].Record}})
		if retry, _ := sink.Retryable(err); res != nil || !retry || !strings.Contains(fmt.Sprint(err), "sink.entities.listing.timeout") {
			t.Fatalf("WriteBatch = %+v, %v; want a retryable timeout naming the setting", res, err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		api := statusAPI(t, 200, nil, "")
		url := api.srv.URL
		api.srv.Close()
		s := newSink(t, url, batchYAML)
		res, err := s.WriteBatch(context.Background(), "listing", sink.OpDelete, []sink.BatchItem{{RemoteID: "r1", Record: sink.Record{Entity: "listing", Key: "k"}}})
		var se *sink.Error
		if res != nil || !errors.As(err, &se) || !se.Retryable || se.Status != 0 {
			t.Fatalf("WriteBatch = %+v, %v; want a retryable transport error", res, err)
		}
	})
}

// Items that cannot be rendered get the single call's error and are left
// out of the request; the rest go. Misuse of the port is refused before
// anything is sent.
func TestBatchLocalItemErrors(t *testing.T) {
	t.Parallel()
	api, _ := newBulkAPI(t)
	s := newSink(t, api.srv.URL, batchYAML)
	ctx := context.Background()
	items := createItems("a", "b", "c")
	items[1].Record.Data = json.RawMessage(`[1,2]`)
	res, err := s.WriteBatch(ctx, "listing", sink.OpCreate, items)
	if err != nil || len(res) != 3 || res[0].RemoteID != "r1" || res[2].RemoteID != "r2" {
		t.Fatalf("WriteBatch = %+v, %v", res, err)
	}
	if retry, _ := sink.Retryable(res[1].Err); res[1].Err == nil || retry {
		t.Errorf("item with array data: %v; want a permanent error", res[1].Err)
	}
	if reqs := api.requests(); len(reqs) != 1 || strings.Count(reqs[0].Body, "external_id") != 2 {
		t.Errorf("requests %+v; want one with two items", reqs)
	}

	// Nothing left to send: no request.
	res, err = s.WriteBatch(ctx, "listing", sink.OpCreate, items[1:2])
	if err != nil || len(res) != 1 || res[0].Err == nil || len(api.requests()) != 1 {
		t.Fatalf("WriteBatch of one bad item = %+v, %v (%d requests)", res, err, len(api.requests()))
	}

	refused := map[string]func() ([]sink.BatchResult, error){
		"over max_items": func() ([]sink.BatchResult, error) {
			many := make([]sink.BatchItem, 101)
			for i := range many {
				many[i] = createItems(strconv.Itoa(i))[0]
			}
			return s.WriteBatch(ctx, "listing", sink.OpCreate, many)
		},
		"other entity": func() ([]sink.BatchResult, error) {
			other := createItems("a")
			other[0].Record.Entity = "host"
			return s.WriteBatch(ctx, "listing", sink.OpCreate, other)
		},
		"update without remote id": func() ([]sink.BatchResult, error) {
			return s.WriteBatch(ctx, "listing", sink.OpUpdate, createItems("a"))
		},
		"unknown entity": func() ([]sink.BatchResult, error) {
			return s.WriteBatch(ctx, "host", sink.OpCreate, createItems("a"))
		},
		"unknown op": func() ([]sink.BatchResult, error) {
			return s.WriteBatch(ctx, "listing", sink.Op("upsert"), createItems("a"))
		},
	}
	for name, call := range refused {
		res, err := call()
		if retry, _ := sink.Retryable(err); res != nil || err == nil || retry {
			t.Errorf("%s: %+v, %v; want a permanent error", name, res, err)
		}
	}
	if n := len(api.requests()); n != 1 {
		t.Errorf("%d requests after refused calls; want 1", n)
	}
}

// A batch call goes through the sink's credentials: the HMAC signature
// covers the batch body.
func TestBatchIsSigned(t *testing.T) {
	t.Setenv("BATCH_HMAC_SECRET", "s3cret")
	api, _ := newBulkAPI(t)
	s := newSink(t, api.srv.URL, batchYAML+`
auth:
  hmac: {secret: "${BATCH_HMAC_SECRET}"}
`)
	if _, err := s.WriteBatch(context.Background(), "listing", sink.OpCreate, createItems("a", "b")); err != nil {
		t.Fatal(err)
	}
	r := api.requests()[0]
	err := hmacsig.Verify([]byte("s3cret"), r.Method, r.Path, r.Headers.Get(hmacsig.DefaultTimestampHeader), r.Headers.Get(hmacsig.DefaultHeader), []byte(r.Body), time.Now(), time.Minute)
	if err != nil {
		t.Errorf("signature: %v", err)
	}
}

func TestBatchConfigErrors(t *testing.T) {
	t.Parallel()
	const head = "defaults: {base_url: \"http://127.0.0.1:1\"}\nentities:\n  listing:\n"
	cases := []struct {
		entity string
		want   string
	}{
		{`{collection: listings, batch: {}}`, "sink.entities.listing.batch.create.max_items: required; set batch.max_items"},
		{`{collection: listings, batch: {max_items: -1}}`, "sink.entities.listing.batch.max_items: -1 is outside 1..10000"},
		{`{collection: listings, batch: {max_items: 20000}}`, "sink.entities.listing.batch.max_items: 20000 is outside 1..10000"},
		{`{collection: listings, batch: {max_items: 5, delete: {max_items: 10001}}}`, "sink.entities.listing.batch.delete.max_items: 10001 is outside"},
		{`{create: {method: POST, path: /l}, update: {method: PUT, path: "/l/{{.RemoteID | path}}"}, delete: {method: DELETE, path: "/l/{{.RemoteID | path}}"}, batch: {max_items: 5}}`,
			"sink.entities.listing.batch: no bulk route; set the entity's collection"},
		{`{create: {method: POST, path: /l}, update: {method: PUT, path: "/l/{{.RemoteID | path}}"}, delete: {method: DELETE, path: "/l/{{.RemoteID | path}}"}, batch: {max_items: 5, create: {}}}`,
			"sink.entities.listing.batch.create.path: required without a collection"},
		{`{collection: listings, batch: {max_items: 5, create: {method: GET}}}`, `sink.entities.listing.batch.create.method: "GET" is not allowed for a bulk create; use one of POST, PUT, PATCH`},
		{`{collection: listings, batch: {max_items: 5, update: {method: DELETE}}}`, `batch.update.method: "DELETE" is not allowed`},
		{`{collection: listings, batch: {max_items: 5, create: {path: "/bulk/{{.Key}}"}}}`, "sink.entities.listing.batch.create.path: template fails"},
		{`{collection: listings, batch: {max_items: 5, create: {path: "bulk"}}}`, `batch.create.path: must start with "/"`},
		{`{collection: listings, batch: {max_items: 5, create: {path: "/bulk/{{"}}}`, "batch.create.path: template does not parse"},
		{`{collection: listings, batch: {max_items: 5, create: {body: '{"items": [{{range .Items}}{{.Key}}{{end}}]}'}}}`, "sink.entities.listing.batch.create.body: does not render valid JSON with sample items"},
		{`{collection: listings, batch: {max_items: 5, create: {body: '{"items": []}'}}}`, "batch.create.body: does not use .Items; range over them"},
		{`{collection: listings, batch: {max_items: 5, delete: {body: '{"ids": [{{range $i, $it := .Items}}{{if $i}},{{end}}{{$it.Version}}{{end}}]}'}}}`, "batch.delete.body: uses the items' .Version, which a bulk delete does not have (its items have .Key, .RemoteID, .Body)"},
		{`{collection: listings, batch: {max_items: 5, create: {body: '{"items": [{{range $i, $it := .Items}}{{if $i}},{{end}}{{json $it.RemoteID}}{{end}}]}'}}}`, "batch.create.body: uses the items' .RemoteID"},
		{`{collection: listings, batch: {max_items: 5, create: {body: '{{range .Items}}{{.Nope}}{{end}}'}}}`, "batch.create.body: template fails with sample items"},
		{`{collection: listings, batch: {max_items: 5, create: {status: "results[].status"}}}`, `batch.create.status: "results[].status" selects many values`},
		{`{collection: listings, batch: {max_items: 5, create: {results: "a..b"}}}`, "batch.create.results: path"},
		{`{collection: listings, batch: {max_items: 5, update: {id: "uid"}}}`, "sink.entities.listing.batch.update.id: only a bulk create's results carry a new id; remove it"},
	}
	for _, c := range cases {
		_, err := ParseConfig([]byte(head + "    " + c.entity + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\n err: %v\nwant: %s", c.entity, err, c.want)
		}
	}
	// Unknown keys are refused with their line, like every other block.
	if _, err := ParseConfig([]byte(head + "    {collection: listings, batch: {max_item: 5}}\n")); err == nil || !strings.Contains(err.Error(), "max_item") {
		t.Errorf("typo accepted: %v", err)
	}
}

// WithDefaults fills the batch block in a copy.
func TestBatchWithDefaultsDoesNotMutateInput(t *testing.T) {
	t.Parallel()
	create := &BatchRequest{Body: ""}
	cfg := Config{Defaults: Defaults{BaseURL: "http://h"}, EntityConfigs: map[string]EntityConfig{
		"listing": {Collection: "listings", Batch: &BatchConfig{MaxItems: 3, Create: create}},
	}}
	out := cfg.WithDefaults()
	b := out.EntityConfigs["listing"].Batch
	if b == cfg.EntityConfigs["listing"].Batch || b.Create == create || create.Path != "" || cfg.EntityConfigs["listing"].Batch.Update != nil {
		t.Fatalf("WithDefaults wrote through the input: %+v", cfg.EntityConfigs["listing"].Batch)
	}
	want := BatchRequest{Method: "POST", Path: "/v1/listings/batch/update", Results: "results", Status: "status", Error: "error"}
	if *b.Update != want || b.Create.ID != "id" || b.Delete.Path != "/v1/listings/batch/delete" {
		t.Errorf("defaults: create %+v update %+v delete %+v", b.Create, b.Update, b.Delete)
	}
	if err := out.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseBatchResultsShapes(t *testing.T) {
	t.Parallel()
	paths := func(results, status, id, errText string) batchPaths {
		p := batchPaths{where: "w"}
		p.results, _ = parsePath(results)
		p.status, _ = parsePath(status)
		p.errText, _ = parsePath(errText)
		if id != "" {
			p.id, _ = parsePath(id)
		}
		return p
	}
	cases := []struct {
		body   string
		p      batchPaths
		n      int
		want   string // status/id/detail per result
		errHas string
	}{
		{`{"results":[{"status":201,"id":7},{"status":"404","error":"gone"}]}`, paths("results", "status", "id", "error"), 2, `201/7/{"id":7,"status":201} 404//gone`, ""},
		{`[{"s":200,"id":"x"}]`, paths("[]", "s", "id", "error"), 1, `200/x/{"id":"x","s":200}`, ""},
		{`{"d":[{"r":{"s":500,"e":{"code":"E1"}}}]}`, paths("d[].r", "s", "", "e"), 1, `500//{"code":"E1"}`, ""},
		{`{"results":[{"status":201,"id":1.5}]}`, paths("results", "status", "id", "error"), 1, `201//{"id":1.5,"status":201}`, ""},
		{`{"results":null}`, paths("results", "status", "id", "error"), 1, "", "no array"},
		{`{"results":[{"status":99}]}`, paths("results", "status", "id", "error"), 1, "", "no HTTP status"},
		{`{"results":[{"status":201.0}]}`, paths("results", "status", "id", "error"), 1, "", "no HTTP status"},
		{`{"results":[]} x`, paths("results", "status", "id", "error"), 0, "", "trailing data"},
	}
	for _, c := range cases {
		got, err := parseBatchResults([]byte(c.body), c.p, c.n, 100)
		if c.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.errHas) {
				t.Errorf("%s: err %v; want %q", c.body, err, c.errHas)
			}
			continue
		}
		var parts []string
		for _, a := range got {
			parts = append(parts, fmt.Sprintf("%d/%s/%s", a.status, a.id, a.detail))
		}
		if err != nil || strings.Join(parts, " ") != c.want {
			t.Errorf("%s: %s, %v; want %s", c.body, strings.Join(parts, " "), err, c.want)
		}
	}
}

// The default batch body with data that takes the decoded path (repeated
// member names) and a batch template that reads .Data.
func TestBatchBodyFromDecodedData(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, 200, nil, `{"results":[{"status":201,"id":"a"}]}`)
	s := newSink(t, api.srv.URL, `
defaults: {base_url: BASE_URL}
entities:
  listing:
    collection: listings
    batch:
      max_items: 5
      update: {body: '{"rows": [{{range $i, $it := .Items}}{{if $i}},{{end}}{"id": {{json .RemoteID}}, "title": {{json $it.Data.title}}, "all": {{json (merge .Data "v" .Version)}}}{{end}}]}'}
`)
	items := []sink.BatchItem{{Record: sink.Record{Entity: "listing", Key: "k", Version: 2, Data: json.RawMessage(`{"title":"a","title":"b"}`)}}}
	if _, err := s.WriteBatch(context.Background(), "listing", sink.OpCreate, items); err != nil {
		t.Fatal(err)
	}
	items[0].RemoteID = "r"
	if _, err := s.WriteBatch(context.Background(), "listing", sink.OpUpdate, items); err != nil {
		t.Fatal(err)
	}
	reqs := api.requests()
	if reqs[0].Body != `{"items":[{"external_id":"k","title":"b","version":2}]}` {
		t.Errorf("create body %s", reqs[0].Body)
	}
	if reqs[1].Body != `{"rows": [{"id": "r", "title": "b", "all": {"title":"b","v":2}}]}` {
		t.Errorf("update body %s", reqs[1].Body)
	}
}

// The examples under "Bulk endpoints" in docs/configuration.md are valid
// entities, and every key of the batch block is documented there.
func TestBatchKeysDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc)[strings.Index(string(doc), "### Bulk endpoints"):]
	section = section[:strings.Index(section, "### Authenticated sinks")]
	examples := strings.Split(section, "```yaml\n")[1:]
	if len(examples) != 2 {
		t.Fatalf("%d YAML examples; want 2", len(examples))
	}
	for _, ex := range examples {
		entity := ex[:strings.Index(ex, "```")]
		if !strings.HasPrefix(entity, " ") {
			entity = "  " + strings.ReplaceAll(strings.TrimSpace(entity), "\n", "\n  ")
		}
		cfg, err := ParseConfig([]byte("defaults: {base_url: \"http://h\"}\nentities:\n" + entity + "\n"))
		if err != nil {
			t.Fatalf("example %q: %v", entity, err)
		}
		for name, e := range cfg.EntityConfigs {
			if e.Batch == nil || e.Batch.Create == nil {
				t.Errorf("example %s has no batch create", name)
			}
		}
	}
	for prefix, v := range map[string]any{"batch.": BatchConfig{}, "….": BatchRequest{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			key := prefix + typ.Field(i).Tag.Get("yaml")
			if !strings.Contains(section, "`"+key+"`") {
				t.Errorf("docs/configuration.md does not document %s", key)
			}
		}
	}
}
