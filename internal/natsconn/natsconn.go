// Package natsconn opens the NATS connections eventsync's NATS adapters use
// (bus, state store, throttle limiter), so they reconnect and log the same
// way and their errors say the same thing.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
)

// Connect dials url and keeps reconnecting forever: a broker restart must
// not stop a worker. role names the user ("bus", "store", "throttle") in
// the connection name and the logs. The caller marks the error with the
// setting that gave url (internal/setting). Neither the error nor the
// logs show url's secrets (internal/redact).
func Connect(url, role string, log *slog.Logger) (*nats.Conn, error) {
	return ConnectWith(url, role, Options{}, log)
}

// Options are what a NATS connection may need beyond its URL. Their
// configuration keys are the role's: bus_tls and bus_nats for the bus,
// store_tls and store_nats for the store.
type Options struct {
	// TLS verifies the server's certificate and presents a client
	// certificate; set, it turns TLS on whatever the URL's scheme.
	TLS tlsconf.Config
	// CredentialsFile is a .creds file (user JWT and NKey seed);
	// NKeyFile a file holding a user's NKey seed.
	CredentialsFile string
	NKeyFile        string
}

// ConnectWith is Connect with TLS settings and credentials.
func ConnectWith(url, role string, o Options, log *slog.Logger) (*nats.Conn, error) {
	secrets := redact.NewScrubber(url)
	log = secrets.Logger(log)
	tlsKey, authKey := role+"_tls", role+"_nats"
	opts := []nats.Option{nats.Name("eventsync-" + role)}
	if !o.TLS.IsZero() {
		cfg, err := o.TLS.Build(tlsKey)
		if err != nil {
			return nil, fmt.Errorf("NATS %s: %w", role, err)
		}
		opts = append(opts, nats.Secure(cfg))
	}
	switch {
	case o.CredentialsFile != "":
		if _, err := os.Stat(o.CredentialsFile); err != nil {
			return nil, setting.Errorf(authKey+".credentials_file", "NATS %s: %s.credentials_file: %w", role, authKey, err)
		}
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	case o.NKeyFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, setting.Errorf(authKey+".nkey_file", "NATS %s: %s.nkey_file %s: %w", role, authKey, o.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	nc, err := nats.Connect(url, append(opts,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS "+role+" disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS "+role+" reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	)...)
	if err != nil {
		var certErr *tlsconf.Error
		if cerr := tlsconf.Explain(err, tlsKey, o.TLS); errors.As(cerr, &certErr) {
			return nil, secrets.Error(fmt.Errorf("connect to NATS at %s: TLS handshake failed: %w", redact.URL(url), cerr))
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return nil, secrets.Error(setting.Wrap(authKey, fmt.Errorf("connect to NATS at %s: %w; check the user in the URL, %s.credentials_file or %s.nkey_file", redact.URL(url), err, authKey, authKey)))
		}
		return nil, secrets.Error(fmt.Errorf("connect to NATS at %s: %w; is it running with JetStream (-js)?", redact.URL(url), err))
	}
	return nc, nil
}
