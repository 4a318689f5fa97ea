package httpsink_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// syncInPhases runs a worker with cfg on an embedded deployment and
// publishes shapeEvents of entities in phases, waiting for each phase to
// settle (nothing parked) before calling between and publishing the next.
// Short backoff for injected failures; without the throttle the sink's own
// behaviour is what the API sees.
func syncInPhases(t *testing.T, cfg httpsink.Config, entities []string, phases int, between func(phase int)) map[string]map[string]json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	off := false
	client, err := eventsync.Open(eventsync.Config{
		DataDir:  t.TempDir(),
		Sink:     cfg,
		Worker:   eventsync.WorkerConfig{BackoffBase: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond},
		Throttle: eventsync.ThrottleConfig{Enabled: &off},
	}, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	b, err := client.Bus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	worker, err := client.NewWorker(ctx, eventsync.WithWorkerID("shapes"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx) }()
	events, want := shapeEvents(entities)
	for p := range phases {
		part := events[p*len(events)/phases : (p+1)*len(events)/phases]
		for _, ev := range part {
			body, err := ev.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, bus.Live, bus.Message{Body: body}); err != nil {
				t.Fatal(err)
			}
		}
		target := int64((p + 1) * len(events) / phases)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			r := worker.Status().Results
			if r["parked"] != 0 {
				t.Fatalf("phase %d: events parked: %v", p, r)
			}
			if r["applied"]+r["duplicate"]+r["stale"]+r["superseded"]+r["repaired"] == target {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("phase %d: not settled within 2 minutes: %v", p, r)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if p < phases-1 {
			between(p)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
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
