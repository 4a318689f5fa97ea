package config

import (
	"testing"
)

// The TLS blocks and NATS credentials read from YAML, and each scalar can
// be overridden from the environment.
func TestTLSKeys(t *testing.T) {
	cfg, err := Parse([]byte(`
bus: tls://nats.internal:4222
bus_tls: {ca_file: /etc/es/ca.pem, cert_file: /etc/es/client.pem, key_file: /etc/es/client-key.pem, server_name: nats.internal, min_version: "1.3"}
bus_nats: {credentials_file: /etc/es/user.creds}
store: rediss://cache:6380/0
store_tls: {ca_file: /etc/es/ca.pem}
sink:
  tls: {ca_file: /etc/es/api-ca.pem, cert_file: /etc/es/api.pem, key_file: /etc/es/api-key.pem}
  defaults: {base_url: "https://api.example.com"}
  entities: {listing: {collection: listings}}
`))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"EVENTSYNC_STORE_TLS_SERVER_NAME": "cache.internal",
	}
	if err := ApplyEnv(cfg, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if b := cfg.BusTLS; b.CAFile != "/etc/es/ca.pem" || b.CertFile != "/etc/es/client.pem" || b.KeyFile != "/etc/es/client-key.pem" || b.ServerName != "nats.internal" || b.MinVersion != "1.3" {
		t.Errorf("bus_tls %+v", b)
	}
	if cfg.BusNATS.CredentialsFile != "/etc/es/user.creds" || cfg.StoreTLS.CAFile != "/etc/es/ca.pem" || cfg.StoreTLS.ServerName != "cache.internal" {
		t.Errorf("bus_nats %+v, store_tls %+v", cfg.BusNATS, cfg.StoreTLS)
	}
	if s := cfg.Sink.TLS; s.CAFile != "/etc/es/api-ca.pem" || s.CertFile != "/etc/es/api.pem" || s.KeyFile != "/etc/es/api-key.pem" {
		t.Errorf("sink.tls %+v", s)
	}
}
