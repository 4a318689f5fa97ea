package httpsink

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eventsync/eventsync/sink"
)

// countingServer counts the TCP connections clients open to it.
func countingServer(t testing.TB, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// Hundreds of concurrent calls must reuse connections across rounds: Go's
// default transport keeps only two idle connections per host, so each round
// would reconnect almost every call.
func TestConcurrentCallsReuseConnections(t *testing.T) {
	t.Parallel()
	const concurrency, rounds = 100, 3
	release := make(chan struct{})
	var inFlight, maxInFlight atomic.Int64
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		n := inFlight.Add(1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if n == concurrency {
			close(release) // the first round holds until all are in flight
		}
		<-release
		inFlight.Add(-1)
		_, _ = io.WriteString(w, `{}`)
	})
	s := newSink(t, srv.URL, strings.Replace(collectionYAML, "timeout: 2s", "timeout: 30s", 1))
	rec := sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{"a":1}`)}
	for round := range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, concurrency)
		for range concurrency {
			wg.Go(func() {
				if err := s.Update(context.Background(), "r1", rec); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if got := maxInFlight.Load(); got != concurrency {
		t.Errorf("max in flight = %d, want %d (the client must not limit concurrency)", got, concurrency)
	}
	// Round one needs one connection per call; later rounds reuse them.
	if got := conns.Load(); got > concurrency+concurrency/5 {
		t.Errorf("opened %d connections for %d rounds of %d calls; idle connections are not reused", got, rounds, concurrency)
	}
}
