package fakeapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/setting"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// api is a test client for one running fake API.
type api struct {
	t   *testing.T
	srv *fakeapi.Running
	c   *http.Client
}

func start(t *testing.T, cfg fakeapi.Config) *api {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	srv, err := fakeapi.Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return &api{t: t, srv: srv, c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (a *api) do(method, path, body string) response {
	a.t.Helper()
	r, err := a.try(context.Background(), method, path, body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (a *api) try(ctx context.Context, method, path, body string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.srv.URL+path, rd)
	if err != nil {
		return response{}, err
	}
	res, err := a.c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}, err
}

func (a *api) expect(method, path, body string, status int) response {
	a.t.Helper()
	r := a.do(method, path, body)
	if r.status != status {
		a.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, status, r.body)
	}
	return r
}

func (a *api) create(collection, body string) string {
	a.t.Helper()
	var rec fakeapi.Record
	a.expect("POST", "/v1/"+collection, body, http.StatusCreated).json(a.t, &rec)
	if rec.ID() == "" {
		a.t.Fatalf("created record has no id: %v", rec)
	}
	return rec.ID()
}

func (a *api) setFaults(doc string) {
	a.t.Helper()
	a.expect("PUT", "/_admin/faults", doc, http.StatusOK)
}

func (a *api) stats() fakeapi.Stats {
	a.t.Helper()
	var st fakeapi.Stats
	a.expect("GET", "/_admin/stats", "", http.StatusOK).json(a.t, &st)
	return st
}

func TestCRUDAndListing(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})

	id := a.create("listing", `{"external_id":"k1","version":1,"name":"Flat","price":120.5}`)
	var got fakeapi.Record
	a.expect("GET", "/v1/listing/"+id, "", http.StatusOK).json(t, &got)
	if got["name"] != "Flat" || got.ExternalID() != "k1" || got["price"] != 120.5 || got.ID() != id {
		t.Fatalf("GET returned %v", got)
	}

	// PUT is a full replace: fields not sent disappear, the id stays.
	got = nil
	a.expect("PUT", "/v1/listing/"+id, `{"external_id":"k1","version":2,"name":"Loft","id":"ignored"}`, http.StatusOK).json(t, &got)
	if got["name"] != "Loft" || got["price"] != nil || got.ID() != id {
		t.Fatalf("PUT returned %v", got)
	}
	a.expect("PUT", "/v1/listing/nope", `{"version":1}`, http.StatusNotFound)
	a.expect("GET", "/v1/listing/nope", "", http.StatusNotFound)
	a.expect("GET", "/v1/other/"+id, "", http.StatusNotFound)

	id2 := a.create("listing", `{"external_id":"k2","version":1}`)
	id3 := a.create("listing", `{"external_id":"k2","version":1}`) // not idempotent
	if id2 == id3 {
		t.Fatalf("two creates returned the same id %q", id2)
	}

	// ?external_id= answers a bare array of every match.
	var matches []fakeapi.Record
	a.expect("GET", "/v1/listing?external_id=k2", "", http.StatusOK).json(t, &matches)
	if len(matches) != 2 || matches[0].ID() != id2 || matches[1].ID() != id3 {
		t.Fatalf("lookup k2 = %v", matches)
	}
	a.expect("GET", "/v1/listing?external_id=none", "", http.StatusOK).json(t, &matches)
	if len(matches) != 0 {
		t.Fatalf("lookup of unknown external_id = %v", matches)
	}

	a.expect("DELETE", "/v1/listing/"+id2, "", http.StatusNoContent)
	a.expect("DELETE", "/v1/listing/"+id2, "", http.StatusNotFound)

	// Paging walks the live records in creation order.
	for i := range 5 {
		a.create("listing", `{"external_id":"p`+strconv.Itoa(i)+`"}`)
	}
	type page struct {
		Data    []fakeapi.Record `json:"data"`
		Page    int              `json:"page"`
		PerPage int              `json:"per_page"`
		Total   int              `json:"total"`
	}
	var ids []string
	for n := 1; ; n++ {
		var p page
		a.expect("GET", "/v1/listing?page="+strconv.Itoa(n)+"&per_page=3", "", http.StatusOK).json(t, &p)
		if p.Page != n || p.PerPage != 3 || p.Total != 7 {
			t.Fatalf("page %d header = %+v", n, p)
		}
		if len(p.Data) == 0 {
			break
		}
		for _, r := range p.Data {
			ids = append(ids, r.ID())
		}
	}
	if len(ids) != 7 || ids[0] != id || ids[1] != id3 {
		t.Fatalf("paged ids = %v", ids)
	}
	var p page
	a.expect("GET", "/v1/listing", "", http.StatusOK).json(t, &p)
	if p.Page != 1 || p.PerPage != 100 || len(p.Data) != 7 {
		t.Fatalf("default page = %+v", p)
	}
	a.expect("GET", "/v1/listing?per_page=5000", "", http.StatusOK).json(t, &p)
	if p.PerPage != fakeapi.MaxPerPage {
		t.Fatalf("per_page not clamped: %d", p.PerPage)
	}
	a.expect("GET", "/v1/empty", "", http.StatusOK).json(t, &p)
	if p.Total != 0 || len(p.Data) != 0 {
		t.Fatalf("empty collection = %+v", p)
	}
}

func TestRejectsBadRequests(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	id := a.create("listing", `{"external_id":"k"}`)
	cases := []struct {
		method, path, body string
		status             int
		errContains        string
	}{
		{"POST", "/v1/listing", `[1,2]`, 400, "JSON object"},
		{"POST", "/v1/listing", `null`, 400, "JSON object"},
		{"POST", "/v1/listing", `{"a":`, 400, "JSON object"},
		{"POST", "/v1/listing", `{"external_id":7}`, 400, `"external_id" must be a string`},
		{"PUT", "/v1/listing/" + id, `"x"`, 400, "JSON object"},
		{"POST", "/v1/listing", `{"big":"` + strings.Repeat("x", fakeapi.MaxBodyBytes) + `"}`, 413, "larger than"},
		{"PATCH", "/v1/listing/" + id, `{}`, 405, "not allowed"},
		{"DELETE", "/v1/listing", ``, 405, "not allowed"},
		{"GET", "/v1/listing/a/b", ``, 404, "no such route"},
		{"GET", "/v1/bad%20name", ``, 404, "no such route"},
		{"GET", "/v1/listing?page=0", ``, 400, "page must be a positive integer"},
		{"GET", "/v1/listing?per_page=x", ``, 400, "per_page must be a positive integer"},
		{"GET", "/elsewhere", ``, 404, "no such route"},
	}
	for _, c := range cases {
		a.expectError(c.method, c.path, c.body, c.status, c.errContains)
	}
	if n := a.stats().Records["listing"]; n != 1 {
		t.Fatalf("bad requests changed the records: %d records", n)
	}
}

func TestDetectorsStayZeroOnCleanSequentialRun(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	for i := range 20 {
		key := `"external_id":"k` + strconv.Itoa(i) + `"`
		id := a.create("listing", `{`+key+`,"version":1}`)
		a.expect("PUT", "/v1/listing/"+id, `{`+key+`,"version":2}`, 200)
		a.expect("PUT", "/v1/listing/"+id, `{`+key+`,"version":3}`, 200)
		a.expect("PUT", "/v1/listing/"+id, `{`+key+`,"version":3}`, 200) // equal is not stale
		if i%2 == 0 {
			a.expect("DELETE", "/v1/listing/"+id, "", 204)
		}
	}
	st := a.stats()
	if st.OverlappingWrites != 0 || st.DuplicateRecords != 0 || st.StaleWrites != 0 {
		t.Fatalf("detectors fired on a clean run: %+v", st)
	}
	if st.MaxInFlight != 1 || st.InFlight != 0 {
		t.Fatalf("in flight %d, max %d; want 0 and 1 for a sequential client", st.InFlight, st.MaxInFlight)
	}
	if st.Requests["POST"]["201"] != 20 || st.Requests["PUT"]["200"] != 60 || st.Requests["DELETE"]["204"] != 10 || st.Records["listing"] != 10 {
		t.Fatalf("counts = %+v", st)
	}
}

func TestDuplicateDetector(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	first := a.create("listing", `{"external_id":"dup","version":1}`)
	a.create("listing", `{"external_id":"dup","version":1}`)
	a.create("listing", `{"external_id":"dup","version":1}`)
	a.create("host", `{"external_id":"dup","version":1}`) // other collection: not a duplicate
	if st := a.stats(); st.DuplicateRecords != 2 {
		t.Fatalf("duplicate_records = %d, want 2 (three records share one external_id)", st.DuplicateRecords)
	}
	a.expect("DELETE", "/v1/listing/"+first, "", 204)
	if st := a.stats(); st.DuplicateRecords != 1 {
		t.Fatalf("after a delete duplicate_records = %d, want 1", st.DuplicateRecords)
	}
	// Moving a record to another external_id by PUT resolves the duplicate.
	recs := a.srv.Records("listing")
	a.expect("PUT", "/v1/listing/"+recs[0].ID(), `{"external_id":"other"}`, 200)
	if st := a.stats(); st.DuplicateRecords != 0 {
		t.Fatalf("after re-keying duplicate_records = %d, want 0", st.DuplicateRecords)
	}
}

func TestStaleWriteDetector(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{VersionField: "rev"})
	id := a.create("listing", `{"external_id":"k","rev":1}`)
	a.expect("PUT", "/v1/listing/"+id, `{"external_id":"k","rev":3}`, 200)
	a.expect("PUT", "/v1/listing/"+id, `{"external_id":"k","rev":2}`, 200) // lowers the version
	a.expect("PUT", "/v1/listing/"+id, `{"external_id":"k","version":1}`, 200)
	if st := a.stats(); st.StaleWrites != 1 {
		t.Fatalf("stale_writes = %d, want 1", st.StaleWrites)
	}
	big := `{"rev":9007199254740993}` // beyond float64 precision: must compare as integers
	a.expect("PUT", "/v1/listing/"+id, big, 200)
	a.expect("PUT", "/v1/listing/"+id, `{"rev":9007199254740992}`, 200)
	if st := a.stats(); st.StaleWrites != 2 {
		t.Fatalf("stale_writes = %d, want 2 after a large integer version went down by one", st.StaleWrites)
	}
}

func TestOverlapDetector(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	id := a.create("listing", `{"external_id":"k","version":1}`)
	a.create("listing", `{"external_id":"other","version":1}`)
	a.setFaults(`{"latency":"1s"}`)

	concurrently := func(reqs ...[3]string) {
		var wg sync.WaitGroup
		for _, r := range reqs {
			wg.Go(func() { a.do(r[0], r[1], r[2]) })
		}
		wg.Wait()
	}
	// Two PUTs on one id, kept in flight together by the latency.
	concurrently(
		[3]string{"PUT", "/v1/listing/" + id, `{"external_id":"k","version":2}`},
		[3]string{"PUT", "/v1/listing/" + id, `{"external_id":"k","version":3}`},
	)
	if st := a.stats(); st.OverlappingWrites != 1 {
		t.Fatalf("overlapping_writes = %d after two concurrent PUTs on one id, want 1", st.OverlappingWrites)
	}
	// A POST racing a PUT on a record with the same external_id overlaps too.
	concurrently(
		[3]string{"POST", "/v1/listing", `{"external_id":"k","version":4}`},
		[3]string{"PUT", "/v1/listing/" + id, `{"external_id":"k","version":4}`},
	)
	if st := a.stats(); st.OverlappingWrites != 2 {
		t.Fatalf("overlapping_writes = %d after POST racing PUT on one external_id, want 2", st.OverlappingWrites)
	}
	// Writes to different records, and reads, do not overlap.
	concurrently(
		[3]string{"POST", "/v1/listing", `{"external_id":"x1"}`},
		[3]string{"POST", "/v1/listing", `{"external_id":"x2"}`},
		[3]string{"GET", "/v1/listing/" + id, ``},
		[3]string{"GET", "/v1/listing/" + id, ``},
		[3]string{"POST", "/v1/host", `{"external_id":"k"}`},
	)
	if st := a.stats(); st.OverlappingWrites != 2 {
		t.Fatalf("overlapping_writes = %d after unrelated concurrent writes, want still 2", st.OverlappingWrites)
	}
}

func TestLatencyFault(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{Latency: fakeapi.Duration(80 * time.Millisecond), Jitter: fakeapi.Duration(40 * time.Millisecond)}})
	begin := time.Now()
	a.expect("GET", "/v1/listing", "", 200)
	if d := time.Since(begin); d < 80*time.Millisecond {
		t.Fatalf("request took %v, want at least the 80ms latency", d)
	}
	a.expect("GET", "/_admin/faults", "", 200)
	// Two admin requests later, latency was still injected only once: faults
	// never apply to /_admin.
	if st := a.stats(); st.FaultsInjected["latency"] != 1 {
		t.Fatalf("latency injected %d times, want 1", st.FaultsInjected["latency"])
	}
}

func TestErrorRateFault(t *testing.T) {
	t.Parallel()
	srv, err := fakeapi.New(fakeapi.Config{Seed: 42, Logger: discardLogger(), Faults: fakeapi.Faults{ErrorRate: 0.3}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := srv.Handler()
	const n = 2000
	byStatus := map[int]int{}
	for range n {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/listing", strings.NewReader(`{"external_id":"k"}`)))
		byStatus[rec.Code]++
	}
	failed := byStatus[500] + byStatus[502] + byStatus[503]
	// Binomial(2000, 0.3): mean 600, sd ≈ 20.5; ±6 sd cannot fail by chance.
	if failed < 477 || failed > 723 {
		t.Fatalf("%d of %d failed, want about 30%%: %v", failed, n, byStatus)
	}
	for _, code := range []int{500, 502, 503} {
		if byStatus[code] == 0 {
			t.Errorf("status %d never injected: %v", code, byStatus)
		}
	}
	// An injected error happens before the write: no record for it.
	if got := srv.Stats().Records["listing"]; got != int64(byStatus[201]) {
		t.Fatalf("%d records for %d successful creates", got, byStatus[201])
	}
}

func TestTimeoutFaultWritesThenHolds(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(time.Minute)}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := a.try(ctx, "POST", "/v1/listing", `{"external_id":"k","version":1}`)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("POST under timeout fault: err = %v, want the client deadline to expire", err)
	}
	// The write happened although the client never heard back.
	recs := a.srv.Records("listing")
	if len(recs) != 1 || recs[0].ExternalID() != "k" {
		t.Fatalf("records after timed-out create = %v, want the record", recs)
	}
	waitFor(t, func() bool { return a.srv.Stats().Requests["POST"]["499"] == 1 })
	// Reads are never held.
	a.expect("GET", "/v1/listing/"+recs[0].ID(), "", 200)

	// With a short hold the response does arrive, late.
	a.setFaults(`{"timeout_hold":"200ms"}`)
	begin := time.Now()
	a.expect("PUT", "/v1/listing/"+recs[0].ID(), `{"external_id":"k","version":2}`, 200)
	if d := time.Since(begin); d < 200*time.Millisecond {
		t.Fatalf("held PUT answered after %v, want at least 200ms", d)
	}
	if st := a.stats(); st.FaultsInjected["timeout"] != 2 {
		t.Fatalf("timeouts injected = %d, want 2", st.FaultsInjected["timeout"])
	}
}

func TestRateLimitFault(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{RateLimit: 0.1, Burst: 2}})
	a.expect("GET", "/v1/listing", "", 200)
	a.expect("GET", "/v1/listing", "", 200)
	r := a.expect("GET", "/v1/listing", "", http.StatusTooManyRequests)
	// One token per 10 s: the client must wait up to 10 s.
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
		t.Fatalf("Retry-After = %q, want 1 to 10 seconds", r.header.Get("Retry-After"))
	}
	a.expect("GET", "/_admin/stats", "", 200) // admin is never limited
	a.setFaults(`{"rate_limit":0}`)
	a.expect("GET", "/v1/listing", "", 200)
	if st := a.stats(); st.Requests["GET"]["429"] != 1 || st.FaultsInjected["rate_limited"] != 1 {
		t.Fatalf("stats after one 429: %+v", st)
	}
}

func TestConcurrencyCeilingFault(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{MaxConcurrency: 2, Latency: fakeapi.Duration(2 * time.Second)}})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { a.expect("GET", "/v1/listing", "", 200) })
	}
	waitFor(t, func() bool { return a.srv.Stats().InFlight == 2 })
	r := a.expect("GET", "/v1/listing", "", http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Fatal("503 above the ceiling has no Retry-After")
	}
	// Refused at once: the two slow requests are still being served.
	if n := a.srv.Stats().InFlight; n != 2 {
		t.Fatalf("in_flight = %d right after the refusal, want the 2 slow requests", n)
	}
	wg.Wait()
	st := a.stats()
	if st.MaxInFlight != 3 || st.FaultsInjected["over_capacity"] != 1 {
		t.Fatalf("max_in_flight = %d, over_capacity = %d; want 3 and 1", st.MaxInFlight, st.FaultsInjected["over_capacity"])
	}
}

func TestOutageThenRecovery(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	id := a.create("listing", `{"external_id":"k"}`)
	a.setFaults(`{"outage_for":"3s"}`)
	r := a.expect("GET", "/v1/listing/"+id, "", http.StatusServiceUnavailable)
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 || ra > 3 {
		t.Fatalf("Retry-After during outage = %q, want the seconds left (1 to 3)", r.header.Get("Retry-After"))
	}
	a.expect("POST", "/v1/listing", `{"external_id":"k"}`, http.StatusServiceUnavailable)
	var f fakeapi.Faults
	a.expect("GET", "/_admin/faults", "", 200).json(t, &f) // admin works during an outage
	if f.OutageFor == nil || *f.OutageFor <= 0 {
		t.Fatalf("GET /_admin/faults during outage: outage_for = %v", f.OutageFor)
	}
	waitFor(t, func() bool { return a.do("GET", "/v1/listing/"+id, "").status == 200 })
	f = fakeapi.Faults{}
	a.expect("GET", "/_admin/faults", "", 200).json(t, &f)
	if f.OutageFor != nil {
		t.Fatalf("outage_for = %v after recovery, want absent", *f.OutageFor)
	}
	if a.stats().Records["listing"] != 1 {
		t.Fatal("a create during the outage was stored")
	}
	// An outage can be ended early.
	a.setFaults(`{"outage_for":"1h"}`)
	a.expect("GET", "/v1/listing/"+id, "", 503)
	a.expect("DELETE", "/_admin/faults", "", 200)
	a.expect("GET", "/v1/listing/"+id, "", 200)
}

func TestFaultsAdminAPI(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{Faults: fakeapi.Faults{Latency: fakeapi.Duration(time.Millisecond)}})
	var f fakeapi.Faults
	a.expect("PUT", "/_admin/faults", `{"error_rate":0.25,"rate_limit":100}`, 200).json(t, &f)
	// A PUT merges: latency stays, burst defaults to one second's worth.
	if f.Latency != fakeapi.Duration(time.Millisecond) || f.ErrorRate != 0.25 || f.RateLimit != 100 || f.Burst != 100 || f.TimeoutHold != fakeapi.Duration(fakeapi.DefaultTimeoutHold) {
		t.Fatalf("faults after merge = %+v", f)
	}
	bad := map[string]string{
		`{"error_rate":1.5}`:     `"error_rate": must be a fraction between 0 and 1`,
		`{"timeout_rate":-0.1}`:  `"timeout_rate": must be a fraction`,
		`{"latency":"fast"}`:     `cannot parse duration "fast"`,
		`{"latency":50}`:         `want a duration string`,
		`{"jitter":"-5ms"}`:      `"jitter": must not be negative`,
		`{"burst":-1}`:           `"burst": must be >= 0`,
		`{"max_concurrency":-3}`: `"max_concurrency": must be >= 0`,
		`{"rate_limit":-1}`:      `"rate_limit": must be requests per second`,
		`{"outage_for":"-1s"}`:   `"outage_for": must not be negative`,
		`{"latenc":"5ms"}`:       `unknown field "latenc"`,
		`{"latency":"5ms"} {}`:   `unexpected data after the object`,
	}
	for doc, want := range bad {
		r := a.do("PUT", "/_admin/faults", doc)
		if r.status != 400 || !strings.Contains(string(r.body), strings.ReplaceAll(want, `"`, `\"`)) {
			t.Errorf("PUT %s: %d %s, want 400 mentioning %s", doc, r.status, r.body, want)
		}
	}
	a.expect("GET", "/_admin/faults", "", 200).json(t, &f)
	if f.ErrorRate != 0.25 {
		t.Fatalf("a rejected PUT changed the faults: %+v", f)
	}
	// The defaulted burst follows a new rate limit.
	a.expect("PUT", "/_admin/faults", `{"rate_limit":10}`, 200).json(t, &f)
	if f.Burst != 10 {
		t.Fatalf("burst after rate_limit 100 → 10 = %d, want the new default 10", f.Burst)
	}
	a.expect("DELETE", "/_admin/faults", "", 200).json(t, &f)
	if f.Latency != 0 || f.ErrorRate != 0 || f.RateLimit != 0 {
		t.Fatalf("faults after DELETE = %+v", f)
	}
}

func TestReset(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	id := a.create("listing", `{"external_id":"k","version":2}`)
	a.create("listing", `{"external_id":"k"}`)
	a.expect("PUT", "/v1/listing/"+id, `{"external_id":"k","version":1}`, 200)
	a.setFaults(`{"jitter":"1ms"}`)
	a.expect("POST", "/_admin/reset", "", http.StatusNoContent)
	st := a.stats()
	if len(st.Records) != 0 || st.DuplicateRecords != 0 || st.StaleWrites != 0 || len(st.Requests) != 0 {
		t.Fatalf("stats after reset = %+v", st)
	}
	a.expect("GET", "/v1/listing/"+id, "", 404)
	var f fakeapi.Faults
	a.expect("GET", "/_admin/faults", "", 200).json(t, &f)
	if f.Jitter != fakeapi.Duration(time.Millisecond) {
		t.Fatalf("reset dropped the faults: %+v", f)
	}
	if newID := a.create("listing", `{}`); newID == id {
		t.Fatalf("an id was reused after reset: %s", newID)
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "state.ndjson")
	a := start(t, fakeapi.Config{StateFile: path})
	a.expect("POST", "/_admin/save", "", 200)
	var ids []string
	for i := range 50 {
		ids = append(ids, a.create("listing", `{"external_id":"k`+strconv.Itoa(i)+`","version":`+strconv.Itoa(i)+`,"nested":{"a":[1,2.5,"x"]}}`))
	}
	a.create("host", `{"external_id":"h","name":"Zoë \"quoted\""}`)
	a.expect("DELETE", "/v1/listing/"+ids[3], "", 204)
	want := map[string][]fakeapi.Record{"listing": a.srv.Records("listing"), "host": a.srv.Records("host")}
	if err := a.srv.Close(); err != nil {
		t.Fatalf("Close (saves): %v", err)
	}
	if m, _ := filepath.Glob(path + ".tmp-*"); len(m) != 0 {
		t.Fatalf("temporary files left behind: %v", m)
	}

	b := start(t, fakeapi.Config{StateFile: path})
	for coll, recs := range want {
		got := b.srv.Records(coll)
		if !jsonEqual(t, got, recs) {
			t.Fatalf("%s after reload:\n got %v\nwant %v", coll, got, recs)
		}
	}
	// The reloaded server never hands out an id already in use.
	if id := b.create("listing", `{}`); contains(ids, id) {
		t.Fatalf("reloaded server reused id %s", id)
	}
	if st := b.stats(); st.Records["listing"] != 50 || st.Records["host"] != 1 {
		t.Fatalf("records after reload = %v", st.Records)
	}
}

func TestStateFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt")
	if err := os.WriteFile(corrupt, []byte(`{"format":"eventsync-fakeapi-state","format_version":1,"next_id":1}`+"\n"+`{"collection":"x","record":{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fakeapi.New(fakeapi.Config{StateFile: corrupt, Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), "record 1") || !strings.Contains(err.Error(), corrupt) {
		t.Fatalf("corrupt state file: err = %v, want one naming the file and record", err)
	}
	alien := filepath.Join(dir, "alien")
	if err := os.WriteFile(alien, []byte(`{"hello":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fakeapi.New(fakeapi.Config{StateFile: alien, Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), "not a fakeapi state file") {
		t.Fatalf("foreign file: err = %v", err)
	}
	a := start(t, fakeapi.Config{})
	a.expect("POST", "/_admin/save", "", http.StatusConflict)
}

// TestConcurrentMixedLoad hammers every route at once (run with -race) and
// checks that the detectors agree with a recount from the records.
func TestConcurrentMixedLoad(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 60 {
				ext := `"external_id":"k` + strconv.Itoa(i%25) + `"`
				var rec fakeapi.Record
				r := a.do("POST", "/v1/listing", `{`+ext+`,"version":1}`)
				r.json(t, &rec)
				switch i % 5 {
				case 0:
					a.do("DELETE", "/v1/listing/"+rec.ID(), "")
				case 1:
					a.do("PUT", "/v1/listing/"+rec.ID(), `{"external_id":"w`+strconv.Itoa(w)+`","version":2}`)
				case 2:
					a.do("GET", "/v1/listing?external_id=k1", "")
				case 3:
					a.do("GET", "/v1/listing?page=2&per_page=7", "")
				case 4:
					if i%20 == 4 {
						a.do("GET", "/_admin/records/listing", "")
					}
				}
			}
		})
	}
	wg.Wait()
	recs := a.srv.Records("listing")
	groups := map[string]int64{}
	for _, r := range recs {
		groups[r.ExternalID()]++
	}
	var dups int64
	for _, n := range groups {
		dups += n - 1
	}
	st := a.stats()
	if st.DuplicateRecords != dups || st.Records["listing"] != int64(len(recs)) || len(recs) != 8*60-8*12 {
		t.Fatalf("stats %d dups / %d records; recount %d dups / %d records", st.DuplicateRecords, st.Records["listing"], dups, len(recs))
	}
	if st.InFlight != 0 {
		t.Fatalf("in_flight = %d when idle", st.InFlight)
	}
}

func TestStartReportsBusyPort(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	_, err := fakeapi.Start(t.Context(), fakeapi.Config{Listen: strings.TrimPrefix(a.srv.URL, "http://"), Logger: discardLogger()})
	if err == nil || !strings.Contains(err.Error(), "pick another address") || setting.Key(err) != "fakeapi.listen" {
		t.Fatalf("Start on a busy port: err = %v, want one suggesting another listen address", err)
	}
}

func TestStopsOnContextCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := fakeapi.Start(ctx, fakeapi.Config{Logger: discardLogger(), Faults: fakeapi.Faults{TimeoutRate: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// A held response must not delay shutdown.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		res, err := (&http.Client{Transport: tr}).Post(srv.URL+"/v1/listing", "application/json", strings.NewReader(`{}`))
		if err == nil {
			_ = res.Body.Close()
		}
	})
	waitFor(t, func() bool { return srv.Stats().Records["listing"] == 1 })
	cancel()
	select {
	case <-srv.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server still running 5 s after its context was cancelled")
	}
	if err := srv.Err(); err != nil {
		t.Fatalf("Err after shutdown: %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []fakeapi.Config{
		{VersionField: "id"},
		{Faults: fakeapi.Faults{ErrorRate: -1}},
	} {
		if _, err := fakeapi.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", cfg)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func jsonEqual(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
