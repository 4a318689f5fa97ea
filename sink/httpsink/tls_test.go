package httpsink_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// The sink talks to the fake API behind TLS with its own throwaway
// authority: the right CA connects, a wrong CA or a missing client
// certificate fails with an error that names the certificate problem and
// the setting, a client certificate opens an API that requires one.
func TestTLS(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	start := func(t *testing.T, requireClient bool) *fakeapi.Running {
		api, err := fakeapi.Start(context.Background(), fakeapi.Config{
			TLS:    certs.ServerTLS(t, requireClient),
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = api.Close() })
		if !strings.HasPrefix(api.URL, "https://") {
			t.Fatalf("URL %s, want https://", api.URL)
		}
		return api
	}
	create := func(t *testing.T, api *fakeapi.Running, tls string) error {
		cfg, err := httpsink.ParseConfig(fmt.Appendf(nil, `
defaults: {base_url: %q, timeout: 5s}
tls: %s
entities:
  listing: {collection: listings}
`, api.URL, tls))
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.WithDefaults().Validate(); err != nil {
			t.Fatal(err)
		}
		s, err := httpsink.New(cfg, httpsink.WithLogger(nil))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		_, err = s.Create(context.Background(), sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: json.RawMessage(`{"title":"a"}`)})
		return err
	}
	wantCertErr := testenv.WantCertificateError

	t.Run("right CA", func(t *testing.T) {
		api := start(t, false)
		if err := create(t, api, fmt.Sprintf("{ca_file: %q, min_version: '1.3'}", certs.CAFile)); err != nil {
			t.Fatal(err)
		}
		if len(api.Records("listings")) != 1 {
			t.Fatalf("%d records, want 1", len(api.Records("listings")))
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		api := start(t, false)
		err := create(t, api, fmt.Sprintf("{ca_file: %q}", certs.OtherCAFile))
		wantCertErr(t, err, "sink.tls.ca_file", certs.OtherCAFile, "not signed by", "x509")
	})
	t.Run("system CAs", func(t *testing.T) {
		api := start(t, false)
		err := create(t, api, "{}")
		wantCertErr(t, err, "sink.tls.ca_file", "set sink.tls.ca_file")
	})
	t.Run("server name", func(t *testing.T) {
		api := start(t, false)
		err := create(t, api, fmt.Sprintf("{ca_file: %q, server_name: api.example.com}", certs.CAFile))
		wantCertErr(t, err, "sink.tls.server_name", "api.example.com", "localhost")
	})
	t.Run("mTLS", func(t *testing.T) {
		api := start(t, true)
		if err := create(t, api, fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", certs.CAFile, certs.ClientCert, certs.ClientKey)); err != nil {
			t.Fatal(err)
		}
		err := create(t, api, fmt.Sprintf("{ca_file: %q}", certs.CAFile))
		wantCertErr(t, err, "sink.tls.cert_file", "requires a client certificate")
		err = create(t, api, fmt.Sprintf("{ca_file: %q, cert_file: %q, key_file: %q}", certs.CAFile, certs.OtherClientCert, certs.OtherClientKey))
		wantCertErr(t, err, "sink.tls.cert_file", "refused the client certificate", certs.OtherClientCert)
		if len(api.Records("listings")) != 1 {
			t.Fatalf("%d records, want 1", len(api.Records("listings")))
		}
	})
}

// Bad TLS settings stop the sink at start, naming the key.
func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		tls, key string
	}{
		{"{min_version: '1.1'}", "sink.tls.min_version"},
		{"{cert_file: c.pem}", "sink.tls.cert_file"},
		{"{ca_file: /nonexistent/ca.pem}", "sink.tls.ca_file"},
	} {
		cfg, err := httpsink.ParseConfig(fmt.Appendf(nil, "defaults: {base_url: 'https://api.example.com'}\ntls: %s\nentities: {listing: {collection: listings}}\n", tc.tls))
		if err == nil {
			_, err = httpsink.New(cfg)
		}
		if err == nil || setting.Key(err) != tc.key || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("tls %s: error %v (setting %q), want one naming %s", tc.tls, err, setting.Key(err), tc.key)
		}
	}
}
