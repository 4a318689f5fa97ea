package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/testenv"
)

// TestReadyzFollowsTheStore: with the state store behind a proxy the test
// controls, /readyz answers 503 naming the store within its timeout while
// the store is partitioned away (calls hang) or down (connections
// refused), and 200 again once it is back, without a restart.
func TestReadyzFollowsTheStore(t *testing.T) {
	for _, tc := range []struct{ name, url string }{
		// A read timeout far beyond /readyz's: the answer must not wait for it.
		{"redis", testenv.Redis(t) + "?read_timeout=30s"},
		{"postgres", testenv.PostgresPool(t, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			proxy := testenv.NewProxy(t, u.Host)
			ns := testenv.UniqueName("readyz")
			b := rabbitmqtest.Open(t, rabbitmq.Config{URL: testenv.RabbitMQ(t), Namespace: ns})
			client, err := eventsync.Open(eventsync.Config{Store: proxy.URL(t, tc.url), Namespace: ns},
				eventsync.WithBus(b), eventsync.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			st, err := client.Store(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			checks := map[string]healthCheck{"bus": busCheck(b, bus.Live), "store": storeCheck(st)}
			srv, err := startAdmin("127.0.0.1:0", newRegistry(), nil, checks, false, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Stop()
			hc := &http.Client{Timeout: time.Minute}
			readyz := func() (int, string, time.Duration) {
				start := time.Now()
				resp, err := hc.Get("http://" + srv.Addr() + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body), time.Since(start)
			}
			ready := func(when string) {
				t.Helper()
				deadline := time.Now().Add(30 * time.Second)
				for {
					code, body, _ := readyz()
					if code == http.StatusOK {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: /readyz still %d %q after 30s", when, code, body)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			// notReady: 503 naming the store alone, answered within the
			// timeout (the slack is for a loaded machine; a check that
			// waited for the store's own 30 s read timeout would not fit).
			notReady := func(when string) {
				t.Helper()
				code, body, took := readyz()
				if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "store: ") || strings.Contains(body, "bus:") {
					t.Fatalf("%s: /readyz %d %q; want 503 naming the store only", when, code, body)
				}
				if took > healthTimeout+5*time.Second {
					t.Fatalf("%s: /readyz took %v; want an answer within its timeout of %v", when, took, healthTimeout)
				}
				t.Logf("%s: 503 after %v: %q", when, took.Round(time.Millisecond), strings.TrimSpace(body))
			}

			ready("store up")
			proxy.Stall()
			notReady("store partitioned")
			proxy.Resume()
			ready("store back after the partition")
			proxy.Refuse()
			notReady("store down")
			proxy.Resume()
			ready("store back after the outage")
		})
	}
}
