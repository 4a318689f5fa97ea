package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
)

// Certs is a throwaway certificate authority and what it signed, written as
// PEM files in a test's temporary directory: a server certificate for
// localhost and 127.0.0.1, and a client certificate (mutual TLS). Other is
// a second, unrelated authority with its own server certificate, for the
// "wrong CA" cases.
type Certs struct {
	Dir string
	// CAFile is the authority's certificate; ServerCert/ServerKey and
	// ClientCert/ClientKey the certificates it signed and their keys.
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string
	// OtherCAFile is an authority that signed none of the above.
	OtherCAFile string
	// OtherClientCert/OtherClientKey are signed by the other authority:
	// a client certificate a server trusting CAFile refuses.
	OtherClientCert, OtherClientKey string
}

// NewCerts makes a fresh authority and certificates under t.TempDir().
// Files are readable by everyone (a server spawned as another user reads
// them) except the keys, which are 0600 unless the caller chmods them.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	dir := t.TempDir()
	c := &Certs{Dir: dir}
	ca, caKey := newCA(t, "eventsync test CA")
	other, otherKey := newCA(t, "unrelated test CA")
	c.CAFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw, 0o644)
	c.OtherCAFile = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", other.Raw, 0o644)
	c.ServerCert, c.ServerKey = c.leaf(t, "server", ca, caKey, true)
	c.ClientCert, c.ClientKey = c.leaf(t, "client", ca, caKey, false)
	c.OtherClientCert, c.OtherClientKey = c.leaf(t, "other-client", other, otherKey, false)
	return c
}

// ServerTLS returns a server config presenting the server certificate;
// requireClient demands a client certificate signed by the authority.
func (c *Certs) ServerTLS(t testing.TB, requireClient bool) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if requireClient {
		pool := x509.NewCertPool()
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(b)
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg
}

func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func (c *Certs) leaf(t testing.TB, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "eventsync-" + name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, c.Dir, name+".pem", "CERTIFICATE", der, 0o644),
		writePEM(t, c.Dir, name+"-key.pem", "PRIVATE KEY", keyDER, 0o600)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// WantCertificateError checks that err is a certificate problem whose
// message names key (a setting such as "bus_tls.ca_file") and says each of
// words, and that err is marked with key (internal/setting).
func WantCertificateError(t testing.TB, err error, key string, words ...string) {
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
	if !HasSetting(err, key) {
		t.Errorf("error not marked with setting %s: %v", key, err)
	}
}

// HasSetting reports whether any *setting.Error in err's tree is key's.
func HasSetting(err error, key string) bool {
	if se, ok := err.(*setting.Error); ok && se.Key == key {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if HasSetting(e, key) {
				return true
			}
		}
	case interface{ Unwrap() error }:
		return HasSetting(u.Unwrap(), key)
	}
	return false
}
