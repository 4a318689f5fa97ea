// Package tlsconf is the one TLS settings block every eventsync connection
// takes (bus_tls, store_tls, source_tls, sink.tls): the certificate
// authorities trusted for the server, a client certificate for servers
// that require one, the name the server's certificate must carry and the
// lowest TLS version accepted. Build turns it into a *tls.Config with
// errors naming the key at fault; Explain turns a failed handshake into an
// error that says it is a certificate problem and which setting fixes it.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
)

// Config is a TLS settings block. The zero value adds nothing: the
// connection's URL alone says whether TLS is used (amqps://, tls://,
// rediss://, https://), and then the system's certificate authorities
// verify the server.
type Config struct {
	// CAFile is a PEM file of the certificate authorities trusted to sign
	// the server's certificate, instead of the system's.
	CAFile string `yaml:"ca_file" doc:"PEM file of the certificate authorities that sign the server's certificate (default: the system's)"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that require one (mutual TLS).
	CertFile string `yaml:"cert_file" doc:"PEM client certificate, for servers that require one (mutual TLS); needs key_file"`
	KeyFile  string `yaml:"key_file" doc:"PEM private key of cert_file"`
	// ServerName is the name the server's certificate must carry, when it
	// is not the URL's host (a connection through an IP address or a
	// tunnel).
	ServerName string `yaml:"server_name" doc:"name the server's certificate must carry (default: the URL's host)"`
	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3".
	MinVersion string `yaml:"min_version" doc:"lowest TLS version accepted: 1.2 or 1.3 (default 1.2)"`
}

// IsZero reports whether no setting is given.
func (c Config) IsZero() bool { return c == Config{} }

var versions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// Validate checks the settings without reading a file; key is the block's
// configuration key ("bus_tls"), which every error names.
func (c Config) Validate(key string) error {
	var errs []error
	if _, ok := versions[c.MinVersion]; !ok && c.MinVersion != "" {
		errs = append(errs, setting.Errorf(key+".min_version", "%s.min_version: %q must be 1.2 or 1.3", key, c.MinVersion))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, setting.Errorf(key+".cert_file", "%s.cert_file and %s.key_file go together: set both or neither", key, key))
	}
	return errors.Join(errs...)
}

// Build returns the *tls.Config the settings describe, reading the files
// now; key is the block's configuration key ("bus_tls"), which every error
// names. The zero Config builds a config that verifies with the system's
// authorities and accepts TLS 1.2 and later.
func (c Config) Build(key string) (*tls.Config, error) {
	if err := c.Validate(key); err != nil {
		return nil, err
	}
	out := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if v, ok := versions[c.MinVersion]; ok {
		out.MinVersion = v
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, setting.Errorf(key+".ca_file", "%s.ca_file: %w", key, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, setting.Errorf(key+".ca_file", "%s.ca_file %s: no PEM certificate in it", key, c.CAFile)
		}
		out.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, setting.Errorf(key+".cert_file", "%s.cert_file %s and %s.key_file %s: %w", key, c.CertFile, key, c.KeyFile, err)
		}
		out.Certificates = []tls.Certificate{cert}
	}
	return out, nil
}

// Explain returns err with what it means and the setting that fixes it
// when err is a certificate problem of a TLS connection made with c (under
// key, "bus_tls"); any other error, nil included, is returned unchanged.
// The result wraps err and is marked with the setting (internal/setting).
func Explain(err error, key string, c Config) error {
	return ExplainNamed(err, Names{
		CA: key + ".ca_file", Cert: key + ".cert_file", Key: key + ".key_file", ServerName: key + ".server_name",
	}, c.CAFile, c.CertFile)
}

// Names are the settings a certificate problem points to, for a
// connection whose TLS settings are not a Config block (a PostgreSQL URL's
// sslrootcert). Setting, when set, marks every error instead of the
// individual names.
type Names struct {
	CA, Cert, Key, ServerName string
	Setting                   string
}

// PostgresNames are the settings of a PostgreSQL connection string given
// as key ("store", "source"): libpq's sslrootcert, sslcert and sslkey.
func PostgresNames(key string) Names {
	in := " in the " + key + " URL"
	return Names{CA: "sslrootcert" + in, Cert: "sslcert" + in, Key: "sslkey" + in, ServerName: "the host" + in, Setting: key}
}

// ExplainNamed is Explain for settings named by n; caFile and certFile are
// the files they were given (empty: not set).
func ExplainNamed(err error, n Names, caFile, certFile string) error {
	if err == nil {
		return nil
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		what     string
		fix      string
	)
	switch {
	case errors.As(err, &unknown):
		fix = n.CA
		if caFile != "" {
			what = fmt.Sprintf("the server's certificate is not signed by %s (%s)", fix, caFile)
		} else {
			what = fmt.Sprintf("the server's certificate is not signed by a certificate authority this system trusts; set %s to the authority that signed it", fix)
		}
	case errors.As(err, &hostname):
		fix = n.ServerName
		what = fmt.Sprintf("the server's certificate is not valid for %q (it names %s); connect by a name it carries or set %s", hostname.Host, certNames(hostname.Certificate), fix)
	case errors.As(err, &invalid):
		fix = n.CA
		what = "the server's certificate is not valid (" + invalid.Error() + ")"
	case strings.Contains(err.Error(), "remote error: tls:") && strings.Contains(err.Error(), "certificate"),
		strings.Contains(err.Error(), "requires a valid client certificate"):
		// The server refused our certificate, or that we sent none
		// (crypto/tls's alert type is unexported: the text is all there
		// is). PostgreSQL completes the handshake and refuses at login.
		fix = n.Cert
		if certFile == "" {
			what = fmt.Sprintf("the server requires a client certificate; set %s and %s", fix, n.Key)
		} else {
			what = fmt.Sprintf("the server refused the client certificate %s (%s); it must be signed by an authority the server trusts", fix, certFile)
		}
	case strings.Contains(err.Error(), "closed by remote after TLS handshake"):
		// TLS 1.3: the client's handshake is done before the server
		// checks the client's certificate, and the server's alert may be
		// lost to the close (nats.go notices the close).
		fix = n.Cert
		if certFile == "" {
			what = fmt.Sprintf("the server closed the connection right after the TLS handshake, as a server that requires a client certificate does; set %s and %s", fix, n.Key)
		} else {
			what = fmt.Sprintf("the server closed the connection right after the TLS handshake, as a server that refuses the client certificate %s (%s) does", fix, certFile)
		}
	default:
		return err
	}
	if n.Setting != "" {
		fix = n.Setting
	}
	return setting.Wrap(fix, &Error{What: what, Err: err})
}

// Probe finds out why a TLS connection to addr failed after its
// handshake: it connects with cfg, completes the handshake, sends nothing
// and waits up to wait for the server to refuse it. With TLS 1.3 the
// client's handshake ends before the server has checked the client's
// certificate; a server that refuses it sends an alert and closes, and a
// client that has started writing often loses that alert to the reset.
// Probe's connection writes nothing, so the alert arrives. It returns the
// error that ended the connection, nil when the server kept it open.
func Probe(addr string, cfg *tls.Config, wait time.Duration) error {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	_, err = conn.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil
	}
	return err
}

// IsCertificateProblem reports whether err is one Explain explained.
func IsCertificateProblem(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// DSNParam returns the value of name in a PostgreSQL connection string,
// a URL (postgres://…?name=value) or key=value pairs (name=value …).
func DSNParam(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Query().Get(name)
	}
	for _, f := range strings.Fields(dsn) {
		if k, v, ok := strings.Cut(f, "="); ok && k == name {
			return strings.Trim(v, "'")
		}
	}
	return ""
}

// Error is a certificate problem of a TLS connection.
type Error struct {
	// What says what is wrong and which setting fixes it.
	What string
	Err  error
}

func (e *Error) Error() string { return "TLS certificate problem: " + e.What + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

func certNames(c *x509.Certificate) string {
	if c == nil {
		return "no name"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "no name"
	}
	return strings.Join(names, ", ")
}
