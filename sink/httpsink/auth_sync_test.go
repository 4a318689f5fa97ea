package httpsink_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// runningWorker is a worker on an embedded deployment, and its bus.
type runningWorker struct {
	bus    bus.Bus
	worker *eventsync.Worker
}

// startWorker runs a worker with cfg on an embedded deployment until the
// test ends. Short backoff for injected failures; without the throttle
// the sink's own behaviour is what the API sees.
func startWorker(t *testing.T, cfg httpsink.Config) *runningWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	off := false
	client, err := eventsync.Open(eventsync.Config{
		DataDir:  t.TempDir(),
		Sink:     cfg,
		Worker:   eventsync.WorkerConfig{BackoffBase: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		Throttle: eventsync.ThrottleConfig{Enabled: &off},
	}, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	b, err := client.Bus(ctx)
	if err == nil {
		var w *eventsync.Worker
		if w, err = client.NewWorker(ctx, eventsync.WithWorkerID("shapes")); err == nil {
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
				_ = client.Close()
			})
			return &runningWorker{bus: b, worker: w}
		}
	}
	cancel()
	_ = client.Close()
	t.Fatal(err)
	return nil
}

// publish puts events on the live stream.
func (r *runningWorker) publish(t *testing.T, events []event.Event) {
	t.Helper()
	for _, ev := range events {
		body, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := r.bus.Publish(context.Background(), bus.Live, bus.Message{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitSettled waits until n events are settled (parked ones counted only
// when parkedOK) and returns the worker's results.
func (r *runningWorker) waitSettled(t *testing.T, n int64, parkedOK bool) map[string]int64 {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res := r.worker.Status().Results
		if res["parked"] != 0 && !parkedOK {
			t.Fatalf("events parked: %v", res)
		}
		if res["applied"]+res["duplicate"]+res["stale"]+res["superseded"]+res["repaired"]+res["parked"] == n {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events not settled within 2 minutes: %v", n, res)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncInPhases runs a worker with cfg and publishes shapeEvents of
// entities in phases, waiting for each phase to settle (nothing parked)
// before calling between and publishing the next.
func syncInPhases(t *testing.T, cfg httpsink.Config, entities []string, phases int, between func(phase int)) map[string]map[string]json.RawMessage {
	t.Helper()
	r := startWorker(t, cfg)
	events, want := shapeEvents(entities)
	for p := range phases {
		r.publish(t, events[p*len(events)/phases:(p+1)*len(events)/phases])
		r.waitSettled(t, int64((p+1)*len(events)/phases), false)
		if p < phases-1 {
			between(p)
		}
	}
	return want
}

func startAuthFakeAPI(t *testing.T, auth fakeapi.Auth) *fakeapi.Running {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler), Seed: 17, Auth: auth,
		Faults: fakeapi.Faults{ErrorRate: 0.05}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	return api
}

func checkAuthConverged(t *testing.T, api *fakeapi.Running, want map[string]map[string]json.RawMessage) fakeapi.Stats {
	t.Helper()
	var records []map[string]any
	for _, r := range api.Records("listings") {
		records = append(records, normalize(t, r))
	}
	checkConverged(t, want, map[string]map[string][]map[string]any{"listing": byKey(records, "external_id", "id", "version")})
	st := api.Stats()
	if st.DuplicateRecords != 0 || st.StaleWrites != 0 || st.OverlappingWrites != 0 {
		t.Errorf("fake API stats %+v", st)
	}
	return st
}

// A worker syncs an API that wants OAuth2 tokens living one second: the
// run outlives several tokens (each phase starts after the last token's
// lifetime has run out), and the sink fetches new ones as they expire.
func TestWorkerOAuth2TokensExpireMidRun(t *testing.T) {
	t.Parallel()
	api := startAuthFakeAPI(t, fakeapi.Auth{OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "oauth2-test-secret", TokenLifetime: time.Second}})
	cfg := loadShape(t, "fakeapi.yaml", api.URL)
	cfg.Auth.OAuth2 = &httpsink.OAuth2Config{TokenURL: api.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "oauth2-test-secret", Scopes: []string{"records:write"}}
	want := syncInPhases(t, cfg, []string{"listing"}, 3, func(int) { time.Sleep(1100 * time.Millisecond) }) // every token issued so far has expired
	st := checkAuthConverged(t, api, want)
	if st.TokensIssued < 3 {
		t.Errorf("%d tokens issued over three phases each started after the last token expired; want ≥ 3", st.TokensIssued)
	}
}

// Tokens the API expires early (revoked) while the sink still holds them
// cost one 401 and one re-fetch each, never an event.
func TestWorkerOAuth2TokenRevokedMidRun(t *testing.T) {
	t.Parallel()
	api := startAuthFakeAPI(t, fakeapi.Auth{OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "oauth2-test-secret", TokenLifetime: time.Hour}})
	cfg := loadShape(t, "fakeapi.yaml", api.URL)
	cfg.Auth.OAuth2 = &httpsink.OAuth2Config{TokenURL: api.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "oauth2-test-secret"}
	want := syncInPhases(t, cfg, []string{"listing"}, 3, func(int) { api.ExpireTokens() })
	st := checkAuthConverged(t, api, want)
	if st.TokensExpired < 2 || st.TokensIssued != 3 {
		t.Errorf("tokens issued %d, refused as expired %d; want 3 (one per phase) and ≥ 2", st.TokensIssued, st.TokensExpired)
	}
}

// A worker syncs an API that wants every request signed, with custom
// header names and a per-request Idempotency-Key.
func TestWorkerHMAC(t *testing.T) {
	t.Parallel()
	api := startAuthFakeAPI(t, fakeapi.Auth{HMAC: &fakeapi.HMACAuth{Secret: "hmac-test-secret", Header: "X-Hub-Signature", TimestampHeader: "X-Hub-Time"}})
	cfg := loadShape(t, "fakeapi.yaml", api.URL)
	cfg.Auth.HMAC = &httpsink.HMACConfig{Secret: "hmac-test-secret", Header: "x-hub-signature", TimestampHeader: "X-Hub-Time"}
	cfg.Defaults.Headers = map[string]string{"Idempotency-Key": "{{.EventID}}"}
	want := syncInPhases(t, cfg, []string{"listing"}, 1, nil)
	if st := checkAuthConverged(t, api, want); st.AuthFailures != 0 {
		t.Errorf("%d requests refused", st.AuthFailures)
	}
}

// A worker whose secret the API refuses parks the events with a reason
// naming the setting to fix, and without the secret.
func TestWorkerWrongSecretParks(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		api     fakeapi.Auth
		auth    func(url string) httpsink.AuthConfig
		setting string
	}{
		"hmac": {fakeapi.Auth{HMAC: &fakeapi.HMACAuth{Secret: "the-right-secret"}},
			func(string) httpsink.AuthConfig {
				return httpsink.AuthConfig{HMAC: &httpsink.HMACConfig{Secret: "a-wrong-secret"}}
			}, "sink.auth.hmac.secret"},
		"oauth2": {fakeapi.Auth{OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "the-right-secret"}},
			func(url string) httpsink.AuthConfig {
				return httpsink.AuthConfig{OAuth2: &httpsink.OAuth2Config{TokenURL: url + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "a-wrong-secret"}}
			}, "sink.auth.oauth2.client_id, client_secret"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			api := startAuthFakeAPI(t, c.api)
			cfg := loadShape(t, "fakeapi.yaml", api.URL)
			cfg.Auth = c.auth(api.URL)
			r := startWorker(t, cfg)
			events, _ := shapeEvents([]string{"listing"})
			r.publish(t, events[:3])
			r.waitSettled(t, 3, true)
			parked, err := r.bus.ListParked(context.Background(), bus.ParkedFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(parked) != 3 {
				t.Fatalf("%d parked, want 3", len(parked))
			}
			for _, p := range parked {
				if !strings.Contains(p.Reason, c.setting) || strings.Contains(p.Reason, "a-wrong-secret") {
					t.Errorf("park reason %q should name %s and not show the secret", p.Reason, c.setting)
				}
			}
			t.Logf("park reason: %s", parked[0].Reason)
			if len(api.Records("listings")) != 0 {
				t.Error("the API has records written with a wrong secret")
			}
		})
	}
}
