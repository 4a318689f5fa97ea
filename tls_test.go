package eventsync_test

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/internal/testenv"
)

// The TLS tests open the bus and the store through the Client, as every
// command does, against real servers the tests start with their own
// throwaway certificate authority: the right CA connects, a wrong CA or a
// missing client certificate fails with an error that says it is a
// certificate problem and names the setting.

// openStore, openBus and openSource open cfg's state store, bus or
// source through a Client and close it again.
func openStore(t *testing.T, cfg eventsync.Config) error {
	return openWith(t, cfg, func(c *eventsync.Client) error { _, err := c.Store(context.Background()); return err })
}

func openBus(t *testing.T, cfg eventsync.Config) error {
	return openWith(t, cfg, func(c *eventsync.Client) error { _, err := c.Bus(context.Background()); return err })
}

func openSource(t *testing.T, cfg eventsync.Config) error {
	return openWith(t, cfg, func(c *eventsync.Client) error { _, err := c.Source(context.Background()); return err })
}

func openWith(t *testing.T, cfg eventsync.Config, open func(*eventsync.Client) error) error {
	t.Helper()
	cfg.Namespace = testenv.UniqueName("tls")
	c, err := eventsync.Open(cfg, eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer c.Close()
	return open(c)
}

var (
	wantCertError = testenv.WantCertificateError
	hasSetting    = testenv.HasSetting
)

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
		{eventsync.Config{Bus: "amqp://h/", BusTLS: ca}, "bus", "use amqps://"},
		{eventsync.Config{Store: "redis://h:6379/0", StoreTLS: ca}, "store", "use rediss://"},
		{eventsync.Config{Store: "postgres://u:secretpw@h/db", StoreTLS: ca}, "store", "sslmode=verify-full&sslrootcert="},
		{eventsync.Config{DataDir: "/d", BusTLS: ca}, "bus", "embedded"},
		{eventsync.Config{Bus: "amqps://h/", BusTLS: eventsync.TLSConfig{MinVersion: "1.0"}}, "bus_tls.min_version", "1.2 or 1.3"},
		{eventsync.Config{Bus: "amqps://h/", BusTLS: eventsync.TLSConfig{KeyFile: "k.pem"}}, "bus_tls.cert_file", "set both or neither"},
		{eventsync.Config{Bus: "amqp://h/", BusNATS: eventsync.NATSAuth{NKeyFile: "/s.nk"}}, "bus", "not a NATS URL"},
		{eventsync.Config{Store: "tls://h:4222", StoreNATS: eventsync.NATSAuth{NKeyFile: "a", CredentialsFile: "b"}}, "store_nats.credentials_file", "not both"},
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

// startNATS runs an in-process nats-server with JetStream behind TLS that
// requires client certificates signed by certs' authority; auth adds its
// users. It returns the tls:// URL.
func startNATS(t *testing.T, certs *testenv.Certs, auth func(*server.Options)) string {
	t.Helper()
	o := &server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(),
		TLS: true, TLSVerify: true, TLSConfig: certs.ServerTLS(t, true), TLSTimeout: 10,
	}
	auth(o)
	o.NoLog = os.Getenv("H7DEBUG") == ""
	ns, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("H7DEBUG") != "" {
		ns.ConfigureLogger()
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	return "tls://" + ns.Addr().String()
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A NATS bus and store over mutual TLS, authenticated with an NKey: the
// right CA, client certificate and seed connect (tls:// and nats://
// upgraded by bus_tls); a wrong CA, a missing client certificate or a
// missing NKey fail naming the setting.
func TestTLSNATSNKey(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := writeFile(t, certs.Dir, "user.nk", seed)
	url := startNATS(t, certs, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })

	mtls := eventsync.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	nk := eventsync.NATSAuth{NKeyFile: seedFile}
	good := eventsync.Config{Bus: url, BusTLS: mtls, BusNATS: nk, Store: url, StoreTLS: mtls, StoreNATS: nk}
	if err := openBus(t, good); err != nil {
		t.Fatalf("bus: %v", err)
	}
	if err := openStore(t, good); err != nil {
		t.Fatalf("store: %v", err)
	}
	upgraded := good
	upgraded.Bus = strings.Replace(url, "tls://", "nats://", 1)
	if err := openBus(t, upgraded); err != nil {
		t.Fatalf("nats:// with bus_tls: %v", err)
	}

	wrongCA := good
	wrongCA.BusTLS.CAFile, wrongCA.StoreTLS.CAFile = certs.OtherCAFile, certs.OtherCAFile
	wantCertError(t, openBus(t, wrongCA), "bus_tls.ca_file", "not signed by", certs.OtherCAFile, "x509")
	wantCertError(t, openStore(t, wrongCA), "store_tls.ca_file", "not signed by", certs.OtherCAFile)
	noCert := good
	noCert.BusTLS = eventsync.TLSConfig{CAFile: certs.CAFile}
	wantCertError(t, openBus(t, noCert), "bus_tls.cert_file", "client certificate")

	noKey := good
	noKey.BusNATS = eventsync.NATSAuth{}
	err = openBus(t, noKey)
	if err == nil || !strings.Contains(err.Error(), "bus_nats") || !hasSetting(err, "bus_nats") {
		t.Fatalf("without the NKey: %v, want an authorization error naming bus_nats", err)
	}
	t.Log(err)
}

// A NATS server in operator (JWT) mode accepts the bus and the store
// with a credentials file, and refuses them without.
func TestTLSNATSCredentials(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	accClaims := jwt.NewAccountClaims(accPub)
	accClaims.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	accJWT, err := accClaims.Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	userSeed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := writeFile(t, certs.Dir, "user.creds", creds)
	// JetStream in operator mode needs a system account.
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	opClaims.SystemAccount = sysPub
	resolver := &server.MemAccResolver{}
	for pub, claims := range map[string]string{accPub: accJWT, sysPub: sysJWT} {
		if err := resolver.Store(pub, claims); err != nil {
			t.Fatal(err)
		}
	}
	url := startNATS(t, certs, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
		o.AccountResolver = resolver
		o.SystemAccount = sysPub
	})

	mtls := eventsync.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, MinVersion: "1.3"}
	good := eventsync.Config{Bus: url, BusTLS: mtls, BusNATS: eventsync.NATSAuth{CredentialsFile: credsFile},
		Store: url, StoreTLS: mtls, StoreNATS: eventsync.NATSAuth{CredentialsFile: credsFile}}
	if err := openBus(t, good); err != nil {
		t.Fatalf("bus: %v", err)
	}
	if err := openStore(t, good); err != nil {
		t.Fatalf("store: %v", err)
	}
	noCreds := good
	noCreds.StoreNATS = eventsync.NATSAuth{}
	if err := openStore(t, noCreds); err == nil || !hasSetting(err, "store_nats") {
		t.Fatalf("without credentials: %v, want an authorization error naming store_nats", err)
	}
	missing := good
	missing.BusNATS.CredentialsFile = filepath.Join(certs.Dir, "nope.creds")
	if err := openBus(t, missing); err == nil || !hasSetting(err, "bus_nats.credentials_file") {
		t.Fatalf("missing credentials file: %v, want an error naming bus_nats.credentials_file", err)
	}
}

// PostgreSQL store and source take their TLS settings in the URL, parsed
// by pgx as libpq does (sslmode=verify-full, sslrootcert, sslcert,
// sslkey), against a throwaway cluster with ssl=on that accepts only TLS
// connections with a client certificate signed by the test's authority.
func TestTLSPostgres(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	base := testenv.PostgresTLS(t, certs, true)
	dsn := func(rootCert, cert, key string) string {
		q := url.Values{"sslmode": {"verify-full"}, "sslrootcert": {rootCert}}
		if cert != "" {
			q.Set("sslcert", cert)
			q.Set("sslkey", key)
		}
		return base + "?" + q.Encode()
	}
	good := dsn(certs.CAFile, certs.ClientCert, certs.ClientKey)
	if err := openStore(t, eventsync.Config{Store: good}); err != nil {
		t.Fatalf("store: %v", err)
	}
	if err := openSource(t, eventsync.Config{Source: good}); err != nil {
		t.Fatalf("source: %v", err)
	}
	wrongCA := dsn(certs.OtherCAFile, certs.ClientCert, certs.ClientKey)
	wantCertError(t, openStore(t, eventsync.Config{Store: wrongCA}), "store", "sslrootcert in the store URL", "not signed by", certs.OtherCAFile, "x509")
	wantCertError(t, openSource(t, eventsync.Config{Source: wrongCA}), "source", "sslrootcert in the source URL", "not signed by")
	foreign := dsn(certs.CAFile, certs.OtherClientCert, certs.OtherClientKey)
	wantCertError(t, openStore(t, eventsync.Config{Store: foreign}), "store", "refused the client certificate sslcert in the store URL")
	err := openStore(t, eventsync.Config{Store: dsn(certs.CAFile, "", "")})
	wantCertError(t, err, "store", "requires a client certificate", "sslcert in the store URL")
	// Without TLS the server refuses the connection (hostssl only).
	if err := openStore(t, eventsync.Config{Store: base + "?sslmode=disable"}); err == nil {
		t.Fatal("a plain connection was accepted by a hostssl-only server")
	}
}

// A second RabbitMQ node whose only listener is TLS with client
// certificates required: the bus connects over amqps:// with the right CA
// and client certificate, and fails naming bus_tls.* with a wrong CA or
// without a client certificate.
func TestTLSRabbitMQ(t *testing.T) {
	t.Parallel()
	certs := testenv.NewCerts(t)
	url := testenv.RabbitMQTLS(t, certs)
	mtls := eventsync.TLSConfig{CAFile: certs.CAFile, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	if err := openBus(t, eventsync.Config{Bus: url, BusTLS: mtls}); err != nil {
		t.Fatalf("right CA and client certificate: %v", err)
	}
	wrongCA := mtls
	wrongCA.CAFile = certs.OtherCAFile
	wantCertError(t, openBus(t, eventsync.Config{Bus: url, BusTLS: wrongCA}), "bus_tls.ca_file", "rabbitmq: TLS handshake with 127.0.0.1:", "not signed by", certs.OtherCAFile, "x509")
	wantCertError(t, openBus(t, eventsync.Config{Bus: url, BusTLS: eventsync.TLSConfig{CAFile: certs.CAFile}}), "bus_tls.cert_file", "client certificate")
	other := mtls
	other.CertFile, other.KeyFile = certs.OtherClientCert, certs.OtherClientKey
	wantCertError(t, openBus(t, eventsync.Config{Bus: url, BusTLS: other}), "bus_tls.cert_file", "client certificate")
}
