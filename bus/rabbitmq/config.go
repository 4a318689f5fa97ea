package rabbitmq

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
)

// DefaultRetryTiers are the delayed-retry queues declared when none are
// configured. A retry waits in the smallest tier at least as long as the
// requested delay (the largest tier when the delay is longer still).
var DefaultRetryTiers = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute}

// Config configures the RabbitMQ bus.
type Config struct {
	// URL is the AMQP URL, e.g. amqp://user:pass@host:5672/vhost.
	URL string
	// Namespace prefixes every exchange and queue, so several eventsync
	// installations (or tests) can share one broker. Default "eventsync".
	Namespace string
	// RetryTiers are the fixed delays of the retry queues. Default
	// DefaultRetryTiers. Each tier is one quorum queue per stream.
	RetryTiers []time.Duration
	// DeliveryLimit is how many times a stream message may go back to its
	// queue (lost consumer, Release, closing a subscription) before RabbitMQ
	// moves it to the parked queue with reason "delivery_limit". It stops a
	// message that crashes every consumer from looping forever. Default 20,
	// RabbitMQ 4's own default for quorum queues.
	DeliveryLimit int
	// Partitions turns on per-key ordered mode when above 0: each stream
	// is split into this many partition queues behind a consistent-hash
	// exchange (the rabbitmq_consistent_hash_exchange plugin), keyed by
	// the event's entity and key, each with a single active consumer. One
	// key's events then reach one worker, in order. 0 (the default) is
	// one queue per stream with competing consumers. Every process of a
	// deployment must use the same value; see docs/ARCHITECTURE.md.
	Partitions int
	// RebalanceInterval is how often an ordered-mode subscription checks
	// that it is active on no more than its share of the partitions and
	// hands the excess to the workers waiting for them. Default 5s.
	RebalanceInterval time.Duration
	// ConnectTimeout bounds the TCP and AMQP handshake. Default 10s.
	ConnectTimeout time.Duration
	// ReconnectMaxBackoff caps the pause between reconnect attempts after
	// the broker connection is lost. Default 5s.
	ReconnectMaxBackoff time.Duration
	// ConnectionName is shown in the RabbitMQ management UI and in
	// `rabbitmqctl list_connections name`. Default "eventsync <Namespace>".
	ConnectionName string
	// Logger receives connection events. Nil means slog.Default().
	Logger *slog.Logger
	// TLS verifies an amqps:// connection (eventsync.TLSConfig, YAML key
	// bus_tls): a custom certificate authority, a client certificate. Its
	// files are read at every (re)connection, so rotated certificates are
	// picked up. Zero: the system's authorities.
	TLS tlsconf.Config
}

// WithDefaults returns a copy with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = "eventsync"
	}
	if len(c.RetryTiers) == 0 {
		c.RetryTiers = slices.Clone(DefaultRetryTiers)
	} else {
		c.RetryTiers = slices.Clone(c.RetryTiers)
		slices.Sort(c.RetryTiers)
		c.RetryTiers = slices.Compact(c.RetryTiers)
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = 20
	}
	if c.RebalanceInterval <= 0 {
		c.RebalanceInterval = 5 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ReconnectMaxBackoff <= 0 {
		c.ReconnectMaxBackoff = 5 * time.Second
	}
	if c.ConnectionName == "" {
		c.ConnectionName = "eventsync " + c.Namespace
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

var namespacePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// Validate reports the first problem with the configuration, naming the fix.
func (c Config) Validate() error {
	if c.URL == "" {
		return setting.Errorf("bus", "rabbitmq: no URL given; want amqp://user:pass@host:5672/")
	}
	if _, err := amqp.ParseURI(c.URL); err != nil {
		// The parser's message may quote the URL; never echo a password.
		return setting.Errorf("bus", "rabbitmq: bus URL %s is not a valid AMQP URL: %w; want amqp://user:pass@host:5672/vhost", redact.URL(c.URL), err)
	}
	if !namespacePattern.MatchString(c.Namespace) {
		return fmt.Errorf("rabbitmq: namespace %q must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit", c.Namespace)
	}
	for _, tier := range c.RetryTiers {
		if tier < time.Millisecond {
			return fmt.Errorf("rabbitmq: retry tier %v is below 1ms; give positive delays such as 1s,5s,30s", tier)
		}
		if tier > 24*time.Hour*24 {
			return fmt.Errorf("rabbitmq: retry tier %v is over 24 days, beyond RabbitMQ's message TTL range", tier)
		}
	}
	if c.Partitions < 0 || c.Partitions > maxPartitions {
		return setting.Errorf("bus_partitions", "rabbitmq: bus_partitions %d must be 0 (competing consumers) to %d", c.Partitions, maxPartitions)
	}
	if c.DeliveryLimit < 1 {
		return fmt.Errorf("rabbitmq: delivery limit %d must be at least 1", c.DeliveryLimit)
	}
	if err := c.TLS.Validate(tlsKey); err != nil {
		return err
	}
	if !c.TLS.IsZero() && !strings.HasPrefix(strings.ToLower(c.URL), "amqps://") {
		return setting.Errorf("bus", "rabbitmq: TLS settings are given but the bus URL %s is not amqps://", redact.URL(c.URL))
	}
	if c.ConnectTimeout < 0 || c.ReconnectMaxBackoff < 0 {
		return errors.New("rabbitmq: ConnectTimeout and ReconnectMaxBackoff must not be negative")
	}
	return nil
}

// hostPort is the broker address for error messages.
func hostPort(raw string) string {
	u, err := amqp.ParseURI(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return fmt.Sprintf("%s:%d", u.Host, u.Port)
}
