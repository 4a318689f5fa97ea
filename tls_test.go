package eventsync_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
)

// The TLS tests open the bus and the store through the Client, as every
// command does, against real servers the tests start with their own
// throwaway certificate authority: the right CA connects, a wrong CA or a
// missing client certificate fails with an error that says it is a
// certificate problem and names the setting.

// openStore opens cfg's state store and closes it again.
func openStore(t *testing.T, cfg eventsync.Config) error {
	t.Helper()
	cfg.Namespace = testenv.UniqueName("tls")
	c, err := eventsync.Open(cfg, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Store(context.Background())
	return err
}

// openBus opens cfg's bus and closes it again.
func openBus(t *testing.T, cfg eventsync.Config) error {
	t.Helper()
	cfg.Namespace = testenv.UniqueName("tls")
	c, err := eventsync.Open(cfg, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Bus(context.Background())
	return err
}

// wantCertError checks err is a certificate problem naming key (a
// setting such as store_tls.ca_file) and saying each of words.
func wantCertError(t *testing.T, err error, key string, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("connected; want a certificate error")
	}
	msg := err.Error()
	t.Log(msg)
	for _, w := range append([]string{"certificate", key}, words...) {
		if !strings.Contains(msg, w) {
			t.Errorf("error does not say %q: %s", w, msg)
		}
	}
	if !hasSetting(err, key) {
		t.Errorf("error not marked with setting %s: %v", key, err)
	}
}

// hasSetting reports whether any *setting.Error in err's tree is key's.
func hasSetting(err error, key string) bool {
	if se, ok := err.(*setting.Error); ok && se.Key == key {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if hasSetting(e, key) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return hasSetting(u.Unwrap(), key)
	}
	return false
}

func TestTLSRedisStore(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	url := testenv.RedisTLS(t, certs, true) // requires client certificates
	mtls := eventsync.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, MinVersion: "1.2"}
	if err := openStore(t, eventsync.Config{Store: url, StoreTLS: mtls}); err != nil {
		t.Fatalf("right CA and client certificate: %v", err)
	}
	wrongCA := mtls
	wrongCA.CAFile = certs.OtherCAFile
	wantCertError(t, openStore(t, eventsync.Config{Store: url, StoreTLS: wrongCA}), "store_tls.ca_file", "not signed by", certs.OtherCAFile, "x509")
	noCert := eventsync.TLSConfig{CAFile: certs.CAFile}
	wantCertError(t, openStore(t, eventsync.Config{Store: url, StoreTLS: noCert}), "store_tls.cert_file", "requires a client certificate")
	otherCert := mtls
	otherCert.CertFile, otherCert.KeyFile = certs.OtherClientCert, certs.OtherClientKey
	wantCertError(t, openStore(t, eventsync.Config{Store: url, StoreTLS: otherCert}), "store_tls.cert_file", "refused the client certificate")
	wantCertError(t, openStore(t, eventsync.Config{Store: url}), "store_tls.ca_file", "set store_tls.ca_file")
}

// TLS settings a connection would not use stop the configuration, naming
// the key and the fix.
func TestTLSConfigValidate(t *testing.T) {
	t.Parallel()
	ca := eventsync.TLSConfig{CAFile: "/etc/ca.pem"}
	for _, tc := range []struct {
		cfg       eventsync.Config
		key, want string
	}{
		{eventsync.Config{Bus: "amqp://h/", BusTLS: ca}, "bus_tls", "use amqps://"},
		{eventsync.Config{Store: "redis://h:6379/0", StoreTLS: ca}, "store_tls", "use rediss://"},
		{eventsync.Config{Store: "postgres://u:secretpw@h/db", StoreTLS: ca}, "store_tls", "sslmode=verify-full&sslrootcert="},
		{eventsync.Config{DataDir: "/d", BusTLS: ca}, "bus_tls", "embedded"},
		{eventsync.Config{Bus: "amqps://h/", BusTLS: eventsync.TLSConfig{MinVersion: "1.0"}}, "bus_tls.min_version", "1.2 or 1.3"},
		{eventsync.Config{Bus: "amqps://h/", BusTLS: eventsync.TLSConfig{KeyFile: "k.pem"}}, "bus_tls.cert_file", "set both or neither"},
		{eventsync.Config{Bus: "amqp://h/", BusNATS: eventsync.NATSAuth{NKeyFile: "/s.nk"}}, "bus_nats", "not a NATS URL"},
		{eventsync.Config{Store: "tls://h:4222", StoreNATS: eventsync.NATSAuth{NKeyFile: "a", CredentialsFile: "b"}}, "store_nats", "not both"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !hasSetting(err, tc.key) || strings.Contains(err.Error(), "secretpw") {
			t.Errorf("bus %q store %q: got %v, want an error marked %s saying %q", tc.cfg.Bus, tc.cfg.Store, err, tc.key, tc.want)
		}
	}
	for _, ok := range []eventsync.Config{
		{Bus: "amqps://h/", BusTLS: ca, Store: "rediss://h/0", StoreTLS: ca},
		{Bus: "tls://h:4222", BusTLS: ca, BusNATS: eventsync.NATSAuth{CredentialsFile: "/u.creds"}, Store: "nats://h:4222", StoreTLS: ca},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("bus %q store %q: %v", ok.Bus, ok.Store, err)
		}
	}
}
