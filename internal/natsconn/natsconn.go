// Package natsconn opens the NATS connections eventsync's NATS adapters use
// (bus, state store, throttle limiter), so they reconnect and log the same
// way and their errors say the same thing.
package natsconn

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/eventsync/eventsync/internal/redact"
)

// Connect dials url and keeps reconnecting forever: a broker restart must
// not stop a worker. role names the user ("bus", "store", "throttle") in
// the connection name and the logs. The caller marks the error with the
// setting that gave url (internal/setting). Neither the error nor the
// logs show url's secrets (internal/redact).
func Connect(url, role string, log *slog.Logger) (*nats.Conn, error) {
	secrets := redact.NewScrubber(url)
	log = secrets.Logger(log)
	nc, err := nats.Connect(url,
		nats.Name("eventsync-"+role),
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
	)
	if err != nil {
		return nil, secrets.Error(fmt.Errorf("connect to NATS at %s: %w; is it running with JetStream (-js)?", redact.URL(url), err))
	}
	return nc, nil
}
