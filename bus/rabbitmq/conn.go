package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
)

// ErrClosed is returned by every operation after Bus.Close.
var ErrClosed = errors.New("rabbitmq: bus is closed")

// ErrDeliveryLost wraps the error of settling a delivery whose channel died
// (connection lost). The broker redelivers such a message by itself, so the
// outcome is at worst a duplicate that event versions absorb.
var ErrDeliveryLost = errors.New("rabbitmq: the delivery's channel is gone; the broker will redeliver the message")

// connManager owns the AMQP connection and replaces it when it dies.
// Components ask it for the current connection and open their own channels.
type connManager struct {
	cfg  Config
	topo topology
	log  *slog.Logger

	mu    sync.Mutex
	conn  *amqp.Connection // nil while reconnecting
	ready chan struct{}    // closed when conn is usable

	done chan struct{} // closed by close()
	wg   sync.WaitGroup

	serverVersion string // as the broker announced it at the first connection
}

func serverVersion(conn *amqp.Connection) string {
	v, _ := conn.Properties["version"].(string)
	return v
}

func dial(cfg Config) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)
	var tlsCfg *tls.Config
	if !cfg.TLS.IsZero() {
		var err error
		if tlsCfg, err = cfg.TLS.Build(tlsKey); err != nil {
			return nil, fmt.Errorf("rabbitmq: %w", err)
		}
	}
	conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
		Heartbeat:       10 * time.Second,
		Locale:          "en_US",
		Properties:      props,
		Dial:            amqp.DefaultDial(cfg.ConnectTimeout),
		TLSClientConfig: tlsCfg,
	})
	if err != nil {
		if cerr := explainTLS(cfg, tlsCfg, err); cerr != nil {
			return nil, fmt.Errorf("rabbitmq: TLS handshake with %s failed: %w", hostPort(cfg.URL), cerr)
		}
		return nil, explainDialError(cfg.URL, err)
	}
	return conn, nil
}

// tlsKey is the configuration key of the bus's TLS settings.
const tlsKey = "bus_tls"

// explainTLS returns the certificate problem behind a failed amqps://
// dial, nil when there is none. A server refusing the client's
// certificate is seen only after the handshake, and the alert saying so
// is often lost to the reset of the client's first write: a probe
// connection that writes nothing hears it (tlsconf.Probe).
func explainTLS(cfg Config, tlsCfg *tls.Config, err error) error {
	if !strings.HasPrefix(strings.ToLower(cfg.URL), "amqps://") {
		return nil
	}
	if cerr := tlsconf.Explain(err, tlsKey, cfg.TLS); tlsconf.IsCertificateProblem(cerr) {
		return cerr
	}
	if aerr := (*amqp.Error)(nil); errors.As(err, &aerr) && aerr.Server {
		return nil // the broker answered: TLS worked
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if perr := tlsconf.Probe(hostPort(cfg.URL), tlsCfg, min(cfg.ConnectTimeout, 5*time.Second)); perr != nil {
		if cerr := tlsconf.Explain(perr, tlsKey, cfg.TLS); tlsconf.IsCertificateProblem(cerr) {
			return cerr
		}
	}
	return nil
}

// explainDialError says what failed and how to fix it, never echoing a
// password.
func explainDialError(rawURL string, err error) error {
	where := hostPort(rawURL)
	var aerr *amqp.Error
	var nerr net.Error
	switch {
	case errors.As(err, &aerr) && aerr.Code == amqp.AccessRefused:
		return setting.Errorf("bus", "connect to RabbitMQ at %s: login refused (%s); check the user and password in the bus URL amqp://user:pass@host:5672/: %w", where, aerr.Reason, err)
	case errors.As(err, &aerr) && (aerr.Code == amqp.NotAllowed || aerr.Code == amqp.NotFound):
		return setting.Errorf("bus", "connect to RabbitMQ at %s: vhost %s not accessible (%s); create it or fix the vhost in the bus URL amqp://user:pass@host:5672/vhost: %w", where, redact.URL(rawURL), aerr.Reason, err)
	case errors.As(err, &nerr):
		return setting.Errorf("bus", "connect to RabbitMQ at %s: %w; is it running and reachable at that bus URL?", where, err)
	default:
		return setting.Errorf("bus", "connect to RabbitMQ at %s: %w; is the bus URL a RabbitMQ server's, amqp://user:pass@host:5672/?", where, err)
	}
}

// newConnManager dials once (so a wrong URL fails fast at Open), declares
// the topology and starts the watcher that reconnects.
func newConnManager(cfg Config, topo topology) (*connManager, error) {
	conn, err := dial(cfg)
	if err != nil {
		return nil, err
	}
	if err := declareOn(conn, topo); err != nil {
		_ = conn.Close()
		return nil, err
	}
	m := &connManager{cfg: cfg, topo: topo, log: cfg.Logger, done: make(chan struct{}), serverVersion: serverVersion(conn)}
	m.setConn(conn)
	m.wg.Add(1)
	go m.watch(conn)
	return m, nil
}

func declareOn(conn *amqp.Connection, topo topology) error {
	// What a switch of bus_partitions leaves behind is checked first, so a
	// refused switch declares nothing that would take messages.
	old, err := topo.findLeftovers(conn)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel to declare topology: %w", err)
	}
	err = topo.declare(ch)
	_ = ch.Close()
	if err != nil {
		return err
	}
	return topo.retire(conn, old)
}

func (m *connManager) setConn(conn *amqp.Connection) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conn = conn
	if m.ready == nil {
		m.ready = make(chan struct{})
	}
	close(m.ready)
}

func (m *connManager) setDisconnected() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conn = nil
	m.ready = make(chan struct{})
}

// current returns a usable connection, waiting for a reconnect if needed.
func (m *connManager) current(ctx context.Context) (*amqp.Connection, error) {
	for {
		m.mu.Lock()
		conn, ready := m.conn, m.ready
		m.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		select {
		case <-m.done:
			return nil, ErrClosed
		default:
		}
		if conn != nil { // closed, but the watcher has not noticed yet
			time.Sleep(10 * time.Millisecond)
		}
		select {
		case <-ready:
		case <-m.done:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the RabbitMQ connection to %s to come back: %w", hostPort(m.cfg.URL), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// channel opens a fresh channel on the current connection.
func (m *connManager) channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		conn, err := m.current(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := conn.Channel()
		if err == nil {
			return ch, nil
		}
		if !conn.IsClosed() {
			return nil, fmt.Errorf("open AMQP channel: %w", err)
		}
		// The connection died under us; wait for the next one.
	}
}

// watch waits for conn to die and replaces it, until close().
func (m *connManager) watch(conn *amqp.Connection) {
	defer m.wg.Done()
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		// A broker under a resource alarm stops reading from publishing
		// connections: publishes, acks and retries all wait, silently but
		// for this log line.
		blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	waiting:
		for {
			select {
			case <-m.done:
				_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
				return
			case b, ok := <-blocked:
				if !ok {
					blocked = nil
					continue
				}
				if b.Active {
					m.log.Warn("rabbitmq blocked this connection (resource alarm); publishing and settling wait until it lifts: free memory or disk on the broker", "broker", hostPort(m.cfg.URL), "reason", b.Reason)
				} else {
					m.log.Info("rabbitmq unblocked this connection", "broker", hostPort(m.cfg.URL))
				}
			case aerr := <-closed:
				select {
				case <-m.done:
					// Our own close() got here first (it closes the
					// connection after done).
					return
				default:
				}
				m.setDisconnected()
				// A connection closed without an AMQP error delivers a nil
				// *amqp.Error: never hand the logger a typed nil as an
				// error (its Error method dereferences it).
				var reason error = errors.New("closed without a reason from the broker")
				if aerr != nil {
					reason = aerr
				}
				m.log.Warn("rabbitmq connection lost; reconnecting", "broker", hostPort(m.cfg.URL), "error", reason)
				break waiting
			}
		}
		next := m.reconnect()
		if next == nil {
			return // closed while reconnecting
		}
		conn = next
		m.setConn(conn)
		m.log.Info("rabbitmq connection restored", "broker", hostPort(m.cfg.URL))
	}
}

// reconnect dials with capped exponential backoff and full jitter.
func (m *connManager) reconnect() *amqp.Connection {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		conn, err := dial(m.cfg)
		if err == nil {
			if err = declareOn(conn, m.topo); err == nil {
				return conn
			}
			_ = conn.Close()
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		m.log.Warn("rabbitmq reconnect failed", "attempt", attempt, "retry_in", wait, "error", err)
		select {
		case <-m.done:
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, m.cfg.ReconnectMaxBackoff)
	}
}

// closeTimeout bounds the polite part of closing: the close handshakes of
// channels and the connection, which a broker under a resource alarm never
// answers.
const closeTimeout = 5 * time.Second

// close stops the watcher and closes the connection.
func (m *connManager) close() {
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return
	default:
	}
	close(m.done)
	conn := m.conn
	m.mu.Unlock()
	if conn != nil {
		// A broker that blocked the connection does not read the close
		// either: give it closeTimeout, then drop the socket.
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
	}
	m.wg.Wait()
}
