package throttle

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the throttle's Prometheus collectors, shared by every
// throttled sink of a process (labelled by sink name).
type Metrics struct {
	limit    *prometheus.GaugeVec
	rate     *prometheus.GaugeVec
	inFlight *prometheus.GaugeVec
	calls    *prometheus.CounterVec
	wait     *prometheus.HistogramVec
	holds    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_throttle_concurrency_limit",
			Help: "Current adaptive limit of concurrent API calls in this process.",
		}, []string{"sink"}),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_throttle_rate",
			Help: "Cluster-wide call rate per second this process currently allows (configured, or learned from 429s).",
		}, []string{"sink"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "eventsync_throttle_in_flight",
			Help: "API calls in flight in this process, by priority (live, resync).",
		}, []string{"sink", "priority"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsync_throttle_calls_total",
			Help: "API calls by priority and result, sink.Classify's class (ok, client_error, rate_limited, overloaded, server_error, timeout, transport, canceled; local: not sent, the rate limiter's store or the sink failed on this side); rate(result=\"ok\") is the achieved throughput.",
		}, []string{"sink", "priority", "result"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "eventsync_throttle_wait_seconds",
			Help:    "Time a call waited for the hold, a rate token and a concurrency slot, by priority.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink", "priority"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "eventsync_throttle_holds_total",
			Help: "Cluster-wide holds this process set, by reason (retry_after, outage).",
		}, []string{"sink", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.limit, m.rate, m.inFlight, m.calls, m.wait, m.holds)
	}
	return m
}
