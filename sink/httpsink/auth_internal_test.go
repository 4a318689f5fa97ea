package httpsink

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink"
)

// Header templates render per request: an Idempotency-Key from the event
// id on create and update, left out where the call has no event (delete).
func TestHeaderTemplates(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"id":"r1"}`) })
	s := newSink(t, api.srv.URL, `defaults: {base_url: BASE_URL, headers: {Idempotency-Key: "{{.EventID}}", X-Key: "{{.Entity}}:{{.Key | query}}:{{.Version}}"}}
entities:
  listing: {collection: listings}
`)
	ctx := context.Background()
	rec := sink.Record{Entity: "listing", Key: "k 1", Version: 3, Data: json.RawMessage(`{}`), EventID: "ev-42"}
	if _, err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.EventID = "ev-43"
	if err := s.Update(ctx, "r1", rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "listing", "r1"); err != nil {
		t.Fatal(err)
	}
	reqs := api.requests()
	for i, want := range []string{"ev-42", "ev-43", ""} {
		if got := reqs[i].Headers.Get("Idempotency-Key"); got != want {
			t.Errorf("request %d (%s) Idempotency-Key %q, want %q", i, reqs[i].Method, got, want)
		}
		if _, ok := reqs[i].Headers["Idempotency-Key"]; !ok && want != "" {
			t.Errorf("request %d lacks Idempotency-Key", i)
		}
	}
	if got := reqs[0].Headers.Get("X-Key"); got != "listing:k+1:3" {
		t.Errorf("X-Key %q", got)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	const entities = "\nentities: {listing: {collection: listings}}\n"
	for want, yamlDoc := range map[string]string{
		"sink.defaults.headers.X-Body: a header template cannot read .Data": `defaults: {base_url: http://h, headers: {X-Body: "{{.DataJSON}}"}}`,
		"sink.defaults.headers.X-Bad: template does not parse":              `defaults: {base_url: http://h, headers: {X-Bad: "{{.EventID"}}`,
		"sink.auth.oauth2.token_url":                                        "defaults: {base_url: http://h}\nauth: {oauth2: {token_url: \"ftp://x\", client_id: a, client_secret: b}}",
		"sink.auth.oauth2.client_secret: required":                          "defaults: {base_url: http://h}\nauth: {oauth2: {token_url: \"http://x/t\", client_id: a}}",
		"sink.auth.hmac.secret: required":                                   "defaults: {base_url: http://h}\nauth: {hmac: {header: X-S}}",
		"sink.auth.hmac.header":                                             "defaults: {base_url: http://h}\nauth: {hmac: {secret: s, header: \"bad header\"}}",
	} {
		_, err := ParseConfig([]byte(yamlDoc + entities))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err %v, want %q", yamlDoc, err, want)
		}
	}
	t.Run("missing variable", func(t *testing.T) {
		cfg := Config{Defaults: Defaults{BaseURL: "http://h"}, EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings"}},
			Auth: AuthConfig{HMAC: &HMACConfig{Secret: "${EVENTSYNC_TEST_UNSET_HMAC_SECRET}"}}}
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), "sink.auth.hmac.secret: environment variable EVENTSYNC_TEST_UNSET_HMAC_SECRET is not set") {
			t.Fatalf("err %v", err)
		}
	})
}

// startAuthAPI is a fake API requiring auth, and a sink config for it.
func startAuthAPI(t *testing.T, auth fakeapi.Auth) (*fakeapi.Running, Config) {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler), Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	return api, Config{Defaults: Defaults{BaseURL: api.URL}, EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings"}}}
}

// A wrong secret is a permanent error (the event parks) that names the
// setting to fix and never shows the secret.
func TestAuthWrongSecret(t *testing.T) {
	t.Parallel()
	rec := sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)}
	t.Run("hmac", func(t *testing.T) {
		t.Parallel()
		_, cfg := startAuthAPI(t, fakeapi.Auth{HMAC: &fakeapi.HMACAuth{Secret: "right-secret-value"}})
		cfg.Auth.HMAC = &HMACConfig{Secret: "wrong-secret-value"}
		s, err := New(cfg, WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.Create(context.Background(), rec)
		checkRefused(t, err, "sink.auth.hmac.secret", "wrong-secret-value")
	})
	t.Run("oauth2", func(t *testing.T) {
		t.Parallel()
		api, cfg := startAuthAPI(t, fakeapi.Auth{OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "right-secret-value"}})
		cfg.Auth.OAuth2 = &OAuth2Config{TokenURL: api.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "wrong-secret-value"}
		s, err := New(cfg, WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.Create(context.Background(), rec)
		checkRefused(t, err, "sink.auth.oauth2.client_id, client_secret", "wrong-secret-value")
	})
}

func checkRefused(t *testing.T, err error, setting, secret string) {
	t.Helper()
	if err == nil {
		t.Fatal("create succeeded with a wrong secret")
	}
	if retry, _ := sink.Retryable(err); retry {
		t.Errorf("%v is retryable; a wrong secret must park", err)
	}
	if !strings.Contains(err.Error(), setting) || strings.Contains(err.Error(), secret) {
		t.Errorf("error %q should name %s and not show the secret", err, setting)
	}
}

// A token the API stops accepting costs one retry inside the call: the
// sink fetches a new token and the call succeeds.
func TestOAuth2RefetchOn401(t *testing.T) {
	t.Parallel()
	api, cfg := startAuthAPI(t, fakeapi.Auth{OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "s3cret-value", TokenLifetime: time.Hour}})
	cfg.Auth.OAuth2 = &OAuth2Config{TokenURL: api.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "s3cret-value"}
	s, err := New(cfg, WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.Create(ctx, sink.Record{Entity: "listing", Key: "k" + string(rune('a'+i)), Version: 1, Data: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			api.ExpireTokens()
		}
	}
	if st := api.Stats(); st.TokensIssued != 2 || st.TokensExpired != 1 {
		t.Fatalf("tokens issued %d, expired %d; want 2 and 1 (cached, then re-fetched once on 401)", st.TokensIssued, st.TokensExpired)
	}
}

// Every key of sink.auth is documented in docs/configuration.md.
func TestAuthKeysDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	// The example under "Authenticated sinks" is a valid sink section.
	section := string(doc)[strings.Index(string(doc), "### Authenticated sinks"):]
	start := strings.Index(section, "```yaml\nsink:\n") + len("```yaml\nsink:\n")
	var parsed struct {
		Sink Config `yaml:"sink"`
	}
	if err := yaml.Unmarshal([]byte("sink:\n"+section[start:start+strings.Index(section[start:], "```")]), &parsed); err != nil {
		t.Fatalf("the example: %v", err)
	}
	parsed.Sink.Defaults.BaseURL = "http://h"
	parsed.Sink.EntityConfigs = map[string]EntityConfig{"listing": {Collection: "listings"}}
	if err := parsed.Sink.WithDefaults().Validate(); err != nil || parsed.Sink.Auth.OAuth2 == nil || parsed.Sink.Auth.HMAC == nil {
		t.Fatalf("the example %+v: %v", parsed.Sink.Auth, err)
	}
	for prefix, v := range map[string]any{"oauth2.": OAuth2Config{}, "hmac.": HMACConfig{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			key := prefix + strings.Split(typ.Field(i).Tag.Get("yaml"), ",")[0]
			if !strings.Contains(string(doc), "`"+key+"`") {
				t.Errorf("docs/configuration.md does not document sink.auth.%s", key)
			}
		}
	}
}

// Secrets read from files (NAME_FILE) authenticate, and a refused one never
// shows in an error or a debug log line.
func TestAuthSecretsFromFilesStayOutOfLogs(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Setenv("ES_TEST_CLIENT_SECRET_FILE", write("client", "client-secret-from-file"))
	t.Setenv("ES_TEST_HMAC_SECRET_FILE", write("hmac", "hmac-secret-from-file"))
	api, cfg := startAuthAPI(t, fakeapi.Auth{
		OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "client-secret-from-file"},
		HMAC:   &fakeapi.HMACAuth{Secret: "hmac-secret-from-file"},
	})
	cfg.Auth = AuthConfig{
		OAuth2: &OAuth2Config{TokenURL: api.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "${ES_TEST_CLIENT_SECRET}"},
		HMAC:   &HMACConfig{Secret: "${ES_TEST_HMAC_SECRET}"},
	}
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	rec := sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)}
	if _, err := s.Create(ctx, rec); err != nil {
		t.Fatalf("create with the secrets from files: %v", err)
	}
	// The API moves on to other secrets: every call is refused now.
	api2, cfg2 := startAuthAPI(t, fakeapi.Auth{
		OAuth2: &fakeapi.OAuth2Auth{ClientID: "eventsync", ClientSecret: "rotated"},
		HMAC:   &fakeapi.HMACAuth{Secret: "rotated"},
	})
	cfg2.Auth = cfg.Auth
	cfg2.Auth.OAuth2 = &OAuth2Config{TokenURL: api2.URL + fakeapi.TokenPath, ClientID: "eventsync", ClientSecret: "${ES_TEST_CLIENT_SECRET}"}
	s2, err := New(cfg2, WithLogger(logger))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	_, err = s2.Create(ctx, rec)
	if err == nil {
		t.Fatal("create succeeded with refused secrets")
	}
	for _, secret := range []string{"client-secret-from-file", "hmac-secret-from-file"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("%q leaked: err %v\nlogs:\n%s", secret, err, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "sink call failed") {
		t.Errorf("no debug line for the refused call:\n%s", logs.String())
	}
}

// An API that echoes the token it refused has it masked in the excerpt
// the error (and the park reason) keeps.
func TestOAuth2TokenMaskedInExcerpt(t *testing.T) {
	t.Parallel()
	const token = "issued-token-4f9a1c2e7b"
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"access_token":"`+token+`","token_type":"Bearer","expires_in":3600}`)
			return
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":"token `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+` lacks a scope"}`)
	})
	s := newSink(t, api.srv.URL, `defaults: {base_url: BASE_URL}
auth: {oauth2: {token_url: "BASE_URL/token", client_id: id, client_secret: secret-value}}
entities:
  listing: {collection: listings}
`)
	_, err := s.Create(context.Background(), sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{}`)})
	if err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), "lacks a scope") {
		t.Fatalf("err %v: want the 403's excerpt without the token", err)
	}
}
