package fakeapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
)

// batchResult is one item's answer in a batch response.
type batchResult struct {
	Status int    `json:"status"`
	ID     string `json:"id"`
	Error  string `json:"error"`
}

// batch POSTs body to /v1/{collection}/batch/{op}, expects a 200 and
// returns the results.
func (a *api) batch(collection, op, body string) []batchResult {
	a.t.Helper()
	var out struct {
		Results []batchResult `json:"results"`
	}
	a.expect("POST", "/v1/"+collection+"/batch/"+op, body, http.StatusOK).json(a.t, &out)
	return out.Results
}

// single is what one single call answered, reduced like a batch result.
func (a *api) single(method, path, body string) batchResult {
	a.t.Helper()
	r := a.do(method, path, body)
	res := batchResult{Status: r.status}
	if len(r.body) > 0 {
		var b struct {
			ID    string `json:"id"`
			Error string `json:"error"`
		}
		r.json(a.t, &b)
		res.ID, res.Error = b.ID, b.Error
	}
	return res
}

// expectError sends a request and reports (without stopping) an answer
// that is not status with an error message containing errContains.
func (a *api) expectError(method, path, body string, status int, errContains string) response {
	a.t.Helper()
	r := a.do(method, path, body)
	var e struct{ Error string }
	r.json(a.t, &e)
	if r.status != status || !strings.Contains(e.Error, errContains) {
		a.t.Errorf("%s %s %.40s: %d %q, want %d containing %q", method, path, body, r.status, e.Error, status, errContains)
	}
	return r
}

type updateItem struct {
	ID     string          `json:"id"`
	Record json.RawMessage `json:"record"`
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBatchItemsAnswerAsTheirSingleCalls runs one mixed workload twice, as
// single calls on one server and as three batches on another: every item's
// status, id and error message, the records left and the detectors' counts
// are the same.
func TestBatchItemsAnswerAsTheirSingleCalls(t *testing.T) {
	t.Parallel()
	singles, batches := start(t, fakeapi.Config{}), start(t, fakeapi.Config{})

	creates := []string{
		`{"external_id":"a","version":1}`,
		`{"external_id":"b","version":5}`,
		`[1]`,                  // not an object
		`{"external_id":7}`,    // external_id not a string
		`{"external_id":"a"}`,  // a duplicate external id
		`{"id":"x","n":1}`,     // the client's id is replaced
		`null`,                 // not an object
		`{"external_id":"c" }`, // kept, compacted
	}
	updates := []updateItem{
		{"1", json.RawMessage(`{"external_id":"a","version":2}`)},
		{"2", json.RawMessage(`{"external_id":"b","version":4}`)}, // stale: 5 → 4
		{"999", json.RawMessage(`{"version":1}`)},                 // missing
		{"1", json.RawMessage(`"x"`)},                             // invalid record
		{"1", json.RawMessage(`{"external_id":"a2","version":3}`)},
		{"5", json.RawMessage(`{"external_id":"b","version":1}`)}, // moves the duplicate from a to b
	}
	deletes := []string{"6", "999", "6", "8"}
	wantStatus := [][]int{
		{201, 201, 400, 400, 201, 201, 400, 201},
		{200, 200, 404, 400, 200, 200},
		{204, 404, 404, 204},
	}

	var want [3][]batchResult
	for _, c := range creates {
		want[0] = append(want[0], singles.single("POST", "/v1/listing", c))
	}
	for _, u := range updates {
		res := singles.single("PUT", "/v1/listing/"+u.ID, string(u.Record))
		res.ID = u.ID // a batch names the item's record in every update and delete result
		want[1] = append(want[1], res)
	}
	for _, id := range deletes {
		res := singles.single("DELETE", "/v1/listing/"+id, "")
		res.ID = id
		want[2] = append(want[2], res)
	}

	raw := make([]json.RawMessage, len(creates))
	for i, c := range creates {
		raw[i] = json.RawMessage(c)
	}
	got := [3][]batchResult{
		batches.batch("listing", "create", mustJSON(t, map[string]any{"items": raw})),
		batches.batch("listing", "update", mustJSON(t, map[string]any{"items": updates})),
		batches.batch("listing", "delete", mustJSON(t, map[string]any{"ids": deletes})),
	}
	for op := range got {
		if len(got[op]) != len(want[op]) {
			t.Fatalf("batch %d: %d results for %d items: %+v", op, len(got[op]), len(want[op]), got[op])
		}
		for i := range got[op] {
			if got[op][i] != want[op][i] {
				t.Errorf("batch %d item %d: %+v, the single call answered %+v", op, i, got[op][i], want[op][i])
			}
			if got[op][i].Status != wantStatus[op][i] {
				t.Errorf("batch %d item %d: status %d, want %d", op, i, got[op][i].Status, wantStatus[op][i])
			}
		}
	}
	if !jsonEqual(t, batches.srv.Records("listing"), singles.srv.Records("listing")) {
		t.Errorf("records after batches:\n%v\nafter single calls:\n%v", batches.srv.Records("listing"), singles.srv.Records("listing"))
	}
	bs, ss := batches.stats(), singles.stats()
	if bs.StaleWrites != 1 || bs.DuplicateRecords != 1 || bs.OverlappingWrites != 0 {
		t.Errorf("batch detectors: stale %d, duplicates %d, overlaps %d; want 1, 1, 0", bs.StaleWrites, bs.DuplicateRecords, bs.OverlappingWrites)
	}
	if bs.StaleWrites != ss.StaleWrites || bs.DuplicateRecords != ss.DuplicateRecords {
		t.Errorf("detectors differ: batches %+v, single calls %+v", bs, ss)
	}
	if bs.BatchRequests != 3 || bs.BatchItems != 11 || bs.Requests["POST"]["200"] != 3 || len(bs.Requests) != 1 {
		t.Errorf("batch stats: batch_requests %d, batch_items %d, requests %v; want 3, 11, only POST 200: 3", bs.BatchRequests, bs.BatchItems, bs.Requests)
	}
	wantResults := map[string]map[string]int64{
		"create": {"201": 5, "400": 3},
		"update": {"200": 4, "404": 1, "400": 1},
		"delete": {"204": 2, "404": 2},
	}
	if !jsonEqual(t, bs.BatchResults, wantResults) {
		t.Errorf("batch_results = %v, want %v", bs.BatchResults, wantResults)
	}
	if ss.BatchRequests != 0 || ss.BatchItems != 0 || ss.BatchResults != nil {
		t.Errorf("single calls counted as batches: %+v", ss)
	}
}

func createBody(n int, prefix string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = `{"external_id":"` + prefix + strconv.Itoa(i) + `","version":1}`
	}
	return `{"items":[` + strings.Join(items, ",") + `]}`
}

func TestBatchIsOneRequestForTheRateLimit(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{RateLimit: 0.1, Burst: 2}})
	a.batch("listing", "create", createBody(50, "a"))
	a.batch("listing", "create", createBody(50, "b"))
	r := a.expect("POST", "/v1/listing/batch/create", createBody(50, "c"), http.StatusTooManyRequests)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
		t.Fatalf("Retry-After = %q, want 1 to 10 seconds", r.header.Get("Retry-After"))
	}
	st := a.stats()
	if st.FaultsInjected["rate_limited"] != 1 || st.Records["listing"] != 100 || st.BatchRequests != 3 || st.BatchItems != 100 {
		t.Fatalf("after two batches of 50 and one refused: rate_limited %d, records %d, batch_requests %d, batch_items %d; want 1, 100, 3, 100",
			st.FaultsInjected["rate_limited"], st.Records["listing"], st.BatchRequests, st.BatchItems)
	}
}

func TestBatchFaultsRefuseTheWholeBatch(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	body := createBody(3, "k")

	a.srv.StartOutage(time.Minute)
	r := a.expect("POST", "/v1/listing/batch/create", body, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 of an outage has no Retry-After")
	}
	a.srv.StartOutage(0)

	if err := a.srv.FailNext(1, http.StatusRequestTimeout, 0); err != nil {
		t.Fatal(err)
	}
	a.expect("POST", "/v1/listing/batch/create", body, http.StatusRequestTimeout)

	a.setFaults(`{"error_rate":1}`)
	if r := a.do("POST", "/v1/listing/batch/create", body); r.status < 500 {
		t.Fatalf("batch under error_rate 1: %d %s", r.status, r.body)
	}
	a.setFaults(`{"error_rate":0}`)

	st := a.stats()
	if st.Records["listing"] != 0 || st.BatchItems != 0 || st.BatchResults != nil {
		t.Fatalf("refused batches wrote: %+v", st)
	}
	if st.FaultsInjected["outage"] != 1 || st.FaultsInjected["error"] != 2 || st.BatchRequests != 3 {
		t.Fatalf("outage %d, error %d, batch_requests %d; want 1, 2, 3", st.FaultsInjected["outage"], st.FaultsInjected["error"], st.BatchRequests)
	}
	a.batch("listing", "create", body)
	if n := a.stats().Records["listing"]; n != 3 {
		t.Fatalf("%d records after the faults ended, want 3", n)
	}
}

func TestBatchTimeoutWritesEveryItemThenHolds(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(time.Minute)}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := a.try(ctx, "POST", "/v1/listing/batch/create", createBody(3, "k"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("batch under the timeout fault: err = %v, want the client deadline to expire", err)
	}
	if recs := a.srv.Records("listing"); len(recs) != 3 {
		t.Fatalf("records after a timed-out batch = %v, want all 3", recs)
	}
	waitFor(t, func() bool { return a.srv.Stats().Requests["POST"]["499"] == 1 })
	if st := a.stats(); st.FaultsInjected["timeout"] != 1 || st.BatchItems != 3 {
		t.Fatalf("timeout injected %d times, batch_items %d; want 1 and 3", st.FaultsInjected["timeout"], st.BatchItems)
	}
}

// TestBatchOverlapsAndCeiling: a batch is one request for the concurrency
// ceiling; its items overlap another request's writes one by one, and
// never each other.
func TestBatchOverlapsAndCeiling(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	a.create("listing", `{"external_id":"a","version":1}`)
	a.create("listing", `{"external_id":"b","version":1}`)
	same := `{"items":[{"id":"1","record":{"external_id":"a","version":2}},{"id":"1","record":{"external_id":"a","version":3}},{"id":"2","record":{"external_id":"b","version":2}}]}`
	a.batch("listing", "update", same)
	if st := a.stats(); st.OverlappingWrites != 0 {
		t.Fatalf("one batch writing a record twice counted %d overlaps, want 0", st.OverlappingWrites)
	}

	// Records without an external_id: one key per item, so the count
	// cannot depend on how the two batches interleave.
	x, y := a.create("listing", `{"version":1}`), a.create("listing", `{"version":1}`)
	a.setFaults(`{"latency":"1s","max_concurrency":2}`)
	both := `{"items":[{"id":"` + x + `","record":{"version":4}},{"id":"` + y + `","record":{"version":4}}]}`
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { a.batch("listing", "update", both) })
	}
	waitFor(t, func() bool { return a.srv.Stats().InFlight == 2 })
	a.expect("POST", "/v1/listing/batch/delete", `{"ids":["1","2"]}`, http.StatusServiceUnavailable)
	wg.Wait()
	st := a.stats()
	if st.OverlappingWrites != 2 || st.FaultsInjected["over_capacity"] != 1 || st.Records["listing"] != 4 {
		t.Fatalf("two concurrent batches on two records: overlaps %d, over_capacity %d, records %d; want 2, 1, 4",
			st.OverlappingWrites, st.FaultsInjected["over_capacity"], st.Records["listing"])
	}
}

func TestBatchRefusals(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{MaxBatch: 3})
	id := a.create("listing", `{"external_id":"k"}`)
	big := `{"big":"` + strings.Repeat("x", fakeapi.MaxBodyBytes) + `"}`
	cases := []struct {
		method, path, body string
		status             int
		errContains        string
	}{
		{"POST", "/v1/listing/batch/create", `{"items":[{},{},{},{}]}`, 413, "batch of 4 items is larger than the limit of 3 items"},
		{"POST", "/v1/listing/batch/create", `{"items":[` + big + `,` + big + `,` + big + `]}`, 413, "batch body larger than 3145728 bytes"},
		{"POST", "/v1/listing/batch/create", `nope`, 400, `want a JSON object: invalid character 'o' in literal null (expecting 'u'); expected {"items":[{...record...}, ...]}`},
		{"POST", "/v1/listing/batch/create", `null`, 400, "want a JSON object, got null"},
		{"POST", "/v1/listing/batch/create", ``, 400, "want a JSON object"},
		{"POST", "/v1/listing/batch/create", `{"records":[{}]}`, 400, `unknown field "records"; expected {"items":[`},
		{"POST", "/v1/listing/batch/create", `{}`, 400, `missing "items"`},
		{"POST", "/v1/listing/batch/create", `{"items":{}}`, 400, `"items" must be an array, got {}`},
		{"POST", "/v1/listing/batch/create", `{"items":null}`, 400, `"items" must be an array, got null`},
		{"POST", "/v1/listing/batch/create", `{"items":[]}`, 400, `"items" is empty; send 1 to 3 items`},
		{"POST", "/v1/listing/batch/update", `{"items":[{"record":{}}]}`, 400, `item 0: "id" is missing; expected {"items":[{"id":"<remote id>","record":{...record...}}, ...]}`},
		{"POST", "/v1/listing/batch/update", `{"items":[{"id":"1"}]}`, 400, `item 0: missing "record"`},
		{"POST", "/v1/listing/batch/update", `{"items":[{"id":1,"record":{}}]}`, 400, `item 0: "id" must be a non-empty string, got 1`},
		{"POST", "/v1/listing/batch/update", `{"items":[{"id":"1","record":{},"v":1}]}`, 400, `item 0: unknown field "v"`},
		{"POST", "/v1/listing/batch/update", `{"items":[[]]}`, 400, `item 0 must be an object`},
		{"POST", "/v1/listing/batch/delete", `{"ids":["1",""]}`, 400, `item 1 must be a non-empty string, got ""; expected {"ids":["<remote id>", ...]}`},
		{"POST", "/v1/listing/batch/delete", `{"items":["1"]}`, 400, `unknown field "items"`},
		{"GET", "/v1/listing/batch/create", ``, 405, "allowed: POST"},
		{"PUT", "/v1/listing/batch/delete", `{"ids":["1"]}`, 405, "allowed: POST"},
		{"POST", "/v1/listing/batch/upsert", `{"items":[{}]}`, 404, `no batch operation "upsert"`},
		{"POST", "/v1/listing/batch/create/x", `{"items":[{}]}`, 404, `no batch operation "create/x"`},
		{"POST", "/v1/listing/batch/", `{"items":[{}]}`, 404, "no such route"},
		{"POST", "/v1/listing/" + id + "/x", `{}`, 404, "or POST /v1/{collection}/batch/{create,update,delete}"},
		{"GET", "/v1/listing/batch", ``, 404, `no record "batch"`}, // an id like any other
	}
	for _, c := range cases {
		r := a.expectError(c.method, c.path, c.body, c.status, c.errContains)
		if r.status == 405 && r.header.Get("Allow") != "POST" {
			t.Errorf("%s %s: Allow %q, want POST", c.method, c.path, r.header.Get("Allow"))
		}
	}
	st := a.stats()
	if st.Records["listing"] != 1 || st.BatchItems != 0 || st.BatchResults != nil {
		t.Fatalf("refused batches changed the records: %+v", st)
	}
	if st.BatchRequests != 17 { // the POSTs to a batch route
		t.Errorf("batch_requests = %d, want 17", st.BatchRequests)
	}

	// A record above the single-record limit is that item's 413.
	half := `{"big":"` + strings.Repeat("x", fakeapi.MaxBodyBytes*3/4) + `"}`
	res := a.batch("listing", "create", `{"items":[{"external_id":"s"},`+big+`,`+half+`]}`)
	if len(res) != 3 || res[0].Status != 201 || res[1].Status != 413 || !strings.Contains(res[1].Error, "record body larger than") || res[2].Status != 201 {
		t.Fatalf("batch with one record too large: %+v", res)
	}
}

func TestMaxBatchValidation(t *testing.T) {
	t.Parallel()
	if _, err := fakeapi.New(fakeapi.Config{MaxBatch: -1, Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), "max batch -1") {
		t.Fatalf("New with MaxBatch -1: %v", err)
	}
	a := start(t, fakeapi.Config{})
	a.batch("listing", "create", createBody(fakeapi.DefaultMaxBatch, "k"))
	r := a.do("POST", "/v1/listing/batch/create", createBody(fakeapi.DefaultMaxBatch+1, "k"))
	if r.status != 413 || !strings.Contains(string(r.body), "limit of 100 items") {
		t.Fatalf("batch of 101 by default: %d %s", r.status, r.body)
	}
}
