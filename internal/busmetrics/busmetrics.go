// Package busmetrics exports the bus's queue depths as Prometheus metrics:
// per stream the messages ready, waiting in retry tiers and delivered but
// not acknowledged, the consumers, and the parked queue. Workers and relays
// register it (they hold the bus anyway), so an alert or an autoscaler
// (KEDA's Prometheus scaler) can read the backlog without credentials for
// the broker, also while the workers are scaled to zero.
//
// The broker is asked when Prometheus scrapes, not by a goroutine of its
// own: nothing runs while nobody looks. A scrape waits at most Timeout for
// the broker, and a read is reused for MaxAge, so several scrapers (or a
// refreshed dashboard) cost the broker one read.
package busmetrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/store"
)

// Defaults of Options.
const (
	DefaultTimeout = 2 * time.Second
	DefaultMaxAge  = 5 * time.Second
)

// Options tune a Collector; the zero value takes the defaults.
type Options struct {
	// Control, when set, is read for the workers' heartbeats: where the
	// broker does not count unacknowledged messages (RabbitMQ over AMQP),
	// their sum is the stream's count (control.FillUnacked).
	Control store.Control
	// Timeout bounds one read of the broker. Default DefaultTimeout.
	Timeout time.Duration
	// MaxAge is how long a read is served again. Default DefaultMaxAge.
	MaxAge time.Duration
	// Logger receives failed reads at debug level. Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// Collector is a prometheus.Collector of the bus's queue statistics.
type Collector struct {
	bus  bus.Bus
	opts Options

	ready, delayed, unacked, consumers, parked, up *prometheus.Desc

	mu      sync.Mutex // held while reading, so concurrent scrapes share a read
	control store.Control
	at      time.Time
	stats   []bus.StreamStats
	failed  bool
}

// New returns a collector of b's statistics for every stream.
func New(b bus.Bus, opts Options) *Collector {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	stream := []string{"stream"}
	return &Collector{
		bus: b, opts: opts, control: opts.Control,
		ready: prometheus.NewDesc("eventsync_queue_ready",
			"Messages waiting in the stream's queue to be delivered.", stream, nil),
		delayed: prometheus.NewDesc("eventsync_queue_delayed",
			"Messages waiting out a retry delay (RabbitMQ's retry tiers; absent where the broker does not tell: NATS counts them as unacked).", stream, nil),
		unacked: prometheus.NewDesc("eventsync_queue_unacked",
			"Messages delivered to consumers and not yet acknowledged, prefetched ones included (RabbitMQ: as the workers' heartbeats report them).", stream, nil),
		consumers: prometheus.NewDesc("eventsync_queue_consumers",
			"Consumers of the stream's queue.", stream, nil),
		parked: prometheus.NewDesc("eventsync_parked_messages",
			"Messages in the parked queue (all streams), waiting for an operator to replay or purge them.", nil, nil),
		up: prometheus.NewDesc("eventsync_queue_stats_up",
			"1 when the last read of the queue statistics from the broker succeeded, else 0 (and the queue metrics are absent).", nil, nil),
	}
}

// UseControl sets Options.Control after New (a process that opened its
// state store later).
func (c *Collector) UseControl(ctl store.Control) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.control = ctl
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.ready, c.delayed, c.unacked, c.consumers, c.parked, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	stats, ok := c.read()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	if !ok {
		gauge(c.up, 0)
		return
	}
	gauge(c.up, 1)
	for i, st := range stats {
		s := string(st.Stream)
		gauge(c.ready, st.Ready, s)
		gauge(c.consumers, int64(st.Consumers), s)
		if st.Delayed >= 0 {
			gauge(c.delayed, st.Delayed, s)
		}
		if st.Unacked >= 0 {
			gauge(c.unacked, st.Unacked, s)
		}
		if i == 0 && st.Parked >= 0 {
			gauge(c.parked, st.Parked)
		}
	}
}

// read returns the statistics of every stream, read again when the last
// read is older than MaxAge; false when that read failed.
func (c *Collector) read() ([]bus.StreamStats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if !c.at.IsZero() && now.Sub(c.at) < c.opts.MaxAge {
		return c.stats, !c.failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Timeout)
	defer cancel()
	stats, err := c.readAll(ctx)
	c.at, c.stats, c.failed = now, stats, err != nil
	if err != nil {
		c.opts.Logger.Debug("reading queue statistics for /metrics failed", "err", err)
	}
	return c.stats, !c.failed
}

// readAll reads every stream's statistics. An unreadable store only
// leaves Unacked unknown where the broker does not count it. c.mu is held.
func (c *Collector) readAll(ctx context.Context) ([]bus.StreamStats, error) {
	var workers []control.WorkerStatus
	read := false
	out := make([]bus.StreamStats, 0, len(bus.Streams))
	for _, s := range bus.Streams {
		st, err := c.bus.Stats(ctx, s)
		if err != nil {
			return nil, err
		}
		if st.Unacked < 0 && c.control != nil {
			if !read {
				read = true
				if workers, err = control.Workers(ctx, c.control); err != nil {
					c.opts.Logger.Debug("reading worker heartbeats for /metrics failed; unacked unknown", "err", err)
				}
			}
			if workers != nil {
				control.FillUnacked(&st, workers)
			}
		}
		out = append(out, st)
	}
	return out, nil
}
