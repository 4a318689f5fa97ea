package engine

import (
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync/sink"
)

// Metrics are the worker's Prometheus collectors.
type Metrics struct {
	events      *prometheus.CounterVec
	inFlight    *prometheus.GaugeVec
	waiting     *prometheus.GaugeVec
	debouncing  *prometheus.GaugeVec
	coalesced   *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	lag         *prometheus.HistogramVec
	sinkLatency *prometheus.HistogramVec
	breaker     *breakerCollector
	paused      *prometheus.GaugeVec
	batchCalls  *prometheus.CounterVec
	batchSize   *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsync_events_total",
			Help: "Deliveries settled, by stream and result (applied, duplicate, stale, repaired, retried, locked, parked, released).",
		}, []string{"stream", "result"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_in_flight",
			Help: "Events being applied right now, by stream.",
		}, []string{"stream"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_events_waiting_for_key",
			Help: "Events waiting in memory for another event of their key in this worker, by stream.",
		}, []string{"stream"}),
		debouncing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_events_debouncing",
			Help: "Events holding their key through their entity's debounce window (worker.debounce), unacknowledged and without a slot, by stream.",
		}, []string{"stream"}),
		coalesced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsync_events_coalesced_total",
			Help: "Deliveries that waited in this worker behind a newer version of their key and were settled without an API call (stale once it was applied): calls saved, by stream.",
		}, []string{"stream"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventsync_event_duration_seconds",
			Help:    "Time to apply one delivery, from receipt to settlement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"stream"}),
		// Fine buckets (×1.25 from 5 ms to about an hour) so a p99 read off
		// them is within about a tenth of the true value.
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventsync_event_lag_seconds",
			Help:    "End-to-end lag of applied events: from the event's occurred_at to its settlement, by stream (events without occurred_at are not counted).",
			Buckets: prometheus.ExponentialBucketsRange(0.005, 3600, 61),
		}, []string{"stream"}),
		sinkLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventsync_sink_request_duration_seconds",
			Help:    "Third-party API call latency by operation and HTTP status (0 for transport errors).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"op", "status"}),
		breaker: newBreakerCollector(),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_stream_paused",
			Help: "1 while a stream is paused by the control plane.",
		}, []string{"stream"}),
		batchCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsync_sink_batch_calls_total",
			Help: "Batch calls to a sink with bulk endpoints, by operation and the whole call's result class (ok, rate_limited, overloaded, timeout, transport, canceled, ...); items that failed on their own count as ok here.",
		}, []string{"op", "result"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventsync_sink_batch_size",
			Help:    "Writes per batch call to a sink with bulk endpoints, by operation.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}, []string{"op"}),
	}
	if reg != nil {
		reg.MustRegister(m.events, m.inFlight, m.waiting, m.debouncing, m.coalesced, m.duration, m.lag, m.sinkLatency, m.breaker, m.paused, m.batchCalls, m.batchSize)
	}
	return m
}

// ObserveSink records one API call; it matches httpsink's observer hook.
func (m *Metrics) ObserveSink(op, _ string, status int, d time.Duration, err error) {
	label := strconv.Itoa(status)
	if status == 0 && err != nil {
		var se *sink.Error
		if errors.As(err, &se) && se.Status != 0 {
			label = strconv.Itoa(se.Status)
		}
	}
	m.sinkLatency.WithLabelValues(op, label).Observe(d.Seconds())
}

// Breaker states as the eventsync_breaker_state gauge reports them.
const (
	breakerClosed   = 0
	breakerHalfOpen = 1
	breakerOpen     = 2
)

// breakerCollector reports the breakers' state when scraped, so the gauges
// follow the clock (an open breaker turns half-open when its time is up,
// with no event to say so). Several workers sharing the metrics report
// the worst state among them.
type breakerCollector struct {
	state, open *prometheus.Desc

	mu      sync.Mutex
	sources []*func() string
}

func newBreakerCollector() *breakerCollector {
	return &breakerCollector{
		state: prometheus.NewDesc("eventsync_breaker_state",
			"Circuit breaker state: 0 closed, 1 half-open (probing the API with one event at a time), 2 open (not pulling events: the API is failing).", nil, nil),
		open: prometheus.NewDesc("eventsync_breaker_open",
			"1 while the circuit breaker is tripped (open or half-open): the API is failing and events wait in the queue.", nil, nil),
	}
}

// follow adds a breaker's State to what the collector reports until the
// returned func is called.
func (c *breakerCollector) follow(state func() string) (stop func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src := &state
	c.sources = append(c.sources, src)
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.sources = slices.DeleteFunc(slices.Clone(c.sources), func(p *func() string) bool { return p == src })
	}
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.open
}

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sources := c.sources
	c.mu.Unlock()
	worst := breakerClosed
	for _, state := range sources {
		switch (*state)() {
		case "open":
			worst = breakerOpen
		case "half-open":
			worst = max(worst, breakerHalfOpen)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, float64(worst))
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(min(worst, 1)))
}
