package fakeapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/fakeapi"
)

func TestRecordsTheTraceparentOfEachRequest(t *testing.T) {
	a := start(t, fakeapi.Config{})
	send := func(method, path, body, traceparent string) {
		t.Helper()
		req, err := http.NewRequestWithContext(context.Background(), method, a.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if traceparent != "" {
			req.Header.Set("traceparent", traceparent)
			req.Header.Set("tracestate", "vendor=1")
		}
		res, err := a.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
	}
	tp := func(i int) string { return fmt.Sprintf("00-%032x-%016x-01", i+1, i+1) }

	send("POST", "/v1/listings", `{"external_id":"a","version":1}`, tp(0))
	send("GET", "/v1/listings", "", "") // no trace context: not recorded
	a.setFaults(`{"outage_for":"1m"}`)
	send("PUT", "/v1/listings/x", `{"version":2}`, tp(1)) // refused: still received
	a.expect("DELETE", "/_admin/faults", "", http.StatusOK)

	var served []fakeapi.TracedRequest
	a.expect("GET", "/_admin/traces", "", http.StatusOK).json(t, &served)
	got := a.srv.TracedRequests()
	if len(got) != 2 || len(served) != 2 {
		t.Fatalf("traced requests %+v (served %+v), want the POST and the PUT", got, served)
	}
	for i, want := range []fakeapi.TracedRequest{
		{Method: "POST", Path: "/v1/listings", Traceparent: tp(0), Tracestate: "vendor=1"},
		{Method: "PUT", Path: "/v1/listings/x", Traceparent: tp(1), Tracestate: "vendor=1"},
	} {
		for _, g := range []fakeapi.TracedRequest{got[i], served[i]} {
			if g.Method != want.Method || g.Path != want.Path || g.Traceparent != want.Traceparent || g.Tracestate != want.Tracestate || g.At.IsZero() {
				t.Errorf("traced request %d = %+v, want %+v", i, g, want)
			}
		}
	}

	// The newest 1,000 are kept, oldest first.
	for i := 2; i < 1005; i++ {
		send("GET", "/v1/listings/none", "", tp(i))
	}
	got = a.srv.TracedRequests()
	if len(got) != 1000 || got[0].Traceparent != tp(5) || got[999].Traceparent != tp(1004) {
		t.Fatalf("%d kept, first %q, last %q; want 1000 from %q to %q", len(got), got[0].Traceparent, got[len(got)-1].Traceparent, tp(5), tp(1004))
	}
	a.srv.Reset()
	if got := a.srv.TracedRequests(); len(got) != 0 {
		t.Fatalf("%d traced requests after Reset, want 0", len(got))
	}
}
