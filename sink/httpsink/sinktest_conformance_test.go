package httpsink_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/sink/sinktest"
)

// The HTTP sink's collection config passes the port's suite against the
// fake API, which fails and stalls requests on the suite's demand.
func TestConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Env {
		api, s := startFakeAPI(t)
		return sinktest.Env{Sink: s, Entity: "listing", Faults: sinktest.FakeAPIFaults(t, api.Server)}
	})
}

// The same through sinktest.Transport, the injector a user's sink gets
// through its HTTP client: the failures never reach the fake API.
func TestConformanceThroughTransport(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Env {
		api, _ := startFakeAPI(t) // its own sink stays unused
		cfg, err := httpsink.ParseConfig(fmt.Appendf(nil, "defaults: {base_url: %q}\nentities: {listing: {collection: listings}}\n", api.URL))
		if err != nil {
			t.Fatal(err)
		}
		tr := &sinktest.Transport{Base: &http.Transport{}}
		t.Cleanup(tr.CloseIdleConnections)
		s, err := httpsink.New(cfg, httpsink.WithHTTPClient(&http.Client{Transport: tr}), httpsink.WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		return sinktest.Env{Sink: s, Entity: "listing", Faults: tr}
	})
}
