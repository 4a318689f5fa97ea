package tlsconf_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/internal/tlsconf"
)

func TestBuild(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	cfg, err := tlsconf.Config{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, ServerName: "db.internal", MinVersion: "1.3"}.Build("bus_tls")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "db.internal" || cfg.MinVersion != tls.VersionTLS13 {
		t.Fatalf("built %+v", cfg)
	}
	zero, err := tlsconf.Config{}.Build("bus_tls")
	if err != nil || zero.RootCAs != nil || zero.MinVersion != tls.VersionTLS12 {
		t.Fatalf("zero config: %+v, %v; want system roots and TLS 1.2", zero, err)
	}

	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg       tlsconf.Config
		key, want string
	}{
		{tlsconf.Config{CAFile: filepath.Join(t.TempDir(), "missing.pem")}, "store_tls.ca_file", "no such file"},
		{tlsconf.Config{CAFile: notPEM}, "store_tls.ca_file", "no PEM certificate"},
		{tlsconf.Config{CertFile: certs.ClientCert, KeyFile: certs.OtherClientKey}, "store_tls.cert_file", "private key does not match"},
		{tlsconf.Config{CertFile: certs.ClientCert}, "store_tls.cert_file", "set both or neither"},
		{tlsconf.Config{MinVersion: "1.1"}, "store_tls.min_version", "1.2 or 1.3"},
	} {
		_, err := tc.cfg.Build("store_tls")
		if err == nil || setting.Key(err) != tc.key || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%+v: %v (setting %q), want one naming %s saying %q", tc.cfg, err, setting.Key(err), tc.key, tc.want)
		}
	}
}

// Errors that are not certificate problems pass through untouched.
func TestExplainLeavesOtherErrors(t *testing.T) {
	t.Parallel()
	if tlsconf.Explain(nil, "bus_tls", tlsconf.Config{}) != nil {
		t.Fatal("nil explained")
	}
	plain := errors.New("dial tcp 127.0.0.1:5671: connect: connection refused")
	if got := tlsconf.Explain(plain, "bus_tls", tlsconf.Config{}); got != plain || tlsconf.IsCertificateProblem(got) {
		t.Fatalf("explained %v as %v", plain, got)
	}
}

func TestDSNParam(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:p@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem", "/etc/ca.pem"},
		{"host=h sslmode=verify-full sslrootcert=/etc/ca.pem", "/etc/ca.pem"},
		{"host=h sslrootcert='/etc/ca.pem'", "/etc/ca.pem"},
		{"postgres://u@h/db", ""},
	} {
		if got := tlsconf.DSNParam(tc.dsn, "sslrootcert"); got != tc.want {
			t.Errorf("DSNParam(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
