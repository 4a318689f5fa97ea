package fakeapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
)

func TestFailNext(t *testing.T) {
	t.Parallel()
	a := start(t, fakeapi.Config{})
	if err := a.srv.FailNext(2, http.StatusBadRequest, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := a.expect("POST", "/v1/listing", `{"external_id":"L-1"}`, http.StatusBadRequest)
		if ra := r.header.Get("Retry-After"); ra != "" {
			t.Fatalf("Retry-After = %q on a failure asked without one", ra)
		}
	}
	if n := a.stats().Records["listing"]; n != 0 {
		t.Fatalf("failed creates left %d records; a failure asked for must come before the write", n)
	}
	a.expect("POST", "/v1/listing", `{"external_id":"L-1"}`, http.StatusCreated)

	if err := a.srv.FailNext(1, http.StatusTooManyRequests, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if r := a.expect("GET", "/v1/listing?external_id=L-1", "", http.StatusTooManyRequests); r.header.Get("Retry-After") != "2" {
		t.Fatalf("Retry-After = %q for 1.5s; want whole seconds rounded up, 2", r.header.Get("Retry-After"))
	}
	a.expect("GET", "/_admin/stats", "", http.StatusOK) // admin never fails
	a.expect("GET", "/v1/listing?external_id=L-1", "", http.StatusOK)

	if err := a.srv.FailNext(5, http.StatusServiceUnavailable, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.srv.FailNext(0, 0, 0); err != nil {
		t.Fatal(err)
	}
	a.expect("GET", "/v1/listing?external_id=L-1", "", http.StatusOK)
	if st := a.stats(); st.FaultsInjected["error"] != 3 || st.Requests["POST"]["400"] != 2 || st.Requests["GET"]["429"] != 1 {
		t.Fatalf("stats = %+v; want 3 injected errors: two 400s on POST, one 429 on GET", st)
	}

	for _, bad := range []struct {
		status int
		after  time.Duration
	}{{200, 0}, {302, 0}, {600, 0}, {503, -time.Second}} {
		if err := a.srv.FailNext(1, bad.status, bad.after); err == nil {
			t.Errorf("FailNext(1, %d, %s) = nil; want an error", bad.status, bad.after)
		}
	}
}
