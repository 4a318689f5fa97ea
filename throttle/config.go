package throttle

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Config tunes the throttle of one sink. The zero value (after
// WithDefaults) learns the API's limits by itself; set Rate when the API
// documents its limit. The lead embeds it in the config file as `throttle:`.
type Config struct {
	// Rate is the API's request limit per second for the whole cluster,
	// between MinRate and MaxRate. 0 means unknown: the rate is learned
	// from 429 responses, within the same limits.
	Rate float64 `yaml:"rate" doc:"API request limit per second for all processes together, 0.001 to 1000000; 0 = unknown, learned from 429s (default 0)"`
	// Burst is how many calls may start at once above the rate, at most
	// MaxBurst; 0 means 50 ms worth of the rate (at least 1).
	Burst int `yaml:"burst" doc:"calls that may start at once above the rate, at most 1000000; 0 = 50ms worth of the rate"`
	// MaxInFlight caps this process's concurrent calls; the adaptive limit
	// moves between 1 and this. 0 means no cap of its own: the limit then
	// stops one above the calls its callers make at once, so it follows
	// the worker's concurrency.
	MaxInFlight int `yaml:"max_in_flight" doc:"most concurrent API calls of one process, the adaptive limit stays below; 0 = as many as the worker makes at once (worker.concurrency) (default 0)"`
	// InitialLimit is where the adaptive concurrency limit starts.
	InitialLimit int `yaml:"initial_limit" doc:"starting concurrency limit per process (default 8)"`
	// InitialRate is where learning starts when Rate is 0, between MinRate
	// and MaxRate; it doubles every second while it is the bottleneck until
	// the first 429, and never passes MaxRate. 0 means no rate at all until
	// the first 429 (or a limit the cluster learned before); slow start then
	// begins from the throughput the API served.
	InitialRate float64 `yaml:"initial_rate" doc:"starting rate when rate is unknown, 0.001 to 1000000, doubling each second until the first 429; 0 = no rate until the API answers 429, then slow start from the throughput it served (default 0)"`
	// LiveShare is the part of the concurrency limit resync calls leave free
	// while live calls are active, and the extra burst live calls may use
	// above resync ones while resync calls share the budget.
	LiveShare float64 `yaml:"live_share" doc:"share of the budget kept for live events while a resync runs, 0..0.9 (default 0.3)"`
	// LatencyTolerance: a short-term average latency above this multiple of
	// the long-term average counts as overload and cuts the limit.
	LatencyTolerance float64 `yaml:"latency_tolerance" doc:"latency blow-up factor that cuts the concurrency limit (default 2)"`
	// Backoff multiplies the concurrency limit on overload (503, timeouts,
	// connection errors, latency blow-ups).
	Backoff float64 `yaml:"backoff" doc:"factor applied to the concurrency limit on overload, 0.5..0.99 (default 0.9)"`
	// OutageFailures consecutive 5xx, timeouts or connection errors (of
	// calls sent after the first of them failed) mean an outage: every process holds for ProbeInterval and only probes go out.
	OutageFailures int `yaml:"outage_failures" doc:"consecutive 5xx/timeouts/connection errors that hold every process for an outage; calls in flight together count once (default 10)"`
	// ProbeInterval is how long an outage hold lasts before the next probe,
	// at most MaxSpan.
	ProbeInterval time.Duration `yaml:"probe_interval" doc:"time between probes during an outage, 10ms to 24h (default 5s)"`
	// MaxHold caps a server's Retry-After, so a bogus header cannot stop
	// the cluster for a day; at most MaxSpan.
	MaxHold time.Duration `yaml:"max_hold" doc:"longest hold a Retry-After may cause, 1s to 24h (default 5m)"`
	// HoldPoll is how often a process reads the cluster hold.
	HoldPoll time.Duration `yaml:"hold_poll" doc:"how often each process reads the cluster-wide hold (default 100ms)"`
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.InitialLimit == 0 {
		c.InitialLimit = 8
		if c.MaxInFlight > 0 {
			c.InitialLimit = min(8, c.MaxInFlight)
		}
	}
	if c.LiveShare == 0 {
		c.LiveShare = 0.3
	}
	if c.LatencyTolerance == 0 {
		c.LatencyTolerance = 2
	}
	if c.Backoff == 0 {
		c.Backoff = 0.9
	}
	if c.OutageFailures == 0 {
		c.OutageFailures = 10
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 5 * time.Second
	}
	if c.MaxHold == 0 {
		c.MaxHold = 5 * time.Minute
	}
	if c.HoldPoll == 0 {
		c.HoldPoll = 100 * time.Millisecond
	}
	return c
}

// Validate reports every invalid setting, each naming its key and the fix.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("throttle.%s: "+format, append([]any{key}, args...)...))
	}
	if c.Rate != 0 && !rateInRange(c.Rate) {
		bad("rate", "%v is out of range; use 0 (learn it) or a rate between %s and %s requests per second", c.Rate, rateText(MinRate), rateText(MaxRate))
	}
	if c.Burst < 0 || c.Burst > MaxBurst {
		bad("burst", "%d is out of range; use a number of calls between 0 and %d (0 = 50ms worth of the rate)", c.Burst, MaxBurst)
	}
	if c.MaxInFlight < 0 {
		bad("max_in_flight", "%d must be at least 1, or 0 to follow the worker's concurrency", c.MaxInFlight)
	}
	switch {
	case c.InitialLimit < 1:
		bad("initial_limit", "%d must be at least 1", c.InitialLimit)
	case c.MaxInFlight > 0 && c.InitialLimit > c.MaxInFlight:
		bad("initial_limit", "%d must be between 1 and max_in_flight (%d)", c.InitialLimit, c.MaxInFlight)
	}
	if c.InitialRate != 0 && !rateInRange(c.InitialRate) {
		bad("initial_rate", "%v is out of range; use 0 (none until the first 429) or a rate between %s and %s requests per second", c.InitialRate, rateText(MinRate), rateText(MaxRate))
	}
	if math.IsNaN(c.LiveShare) || c.LiveShare < 0 || c.LiveShare > 0.9 {
		bad("live_share", "%v must be a fraction between 0 and 0.9", c.LiveShare)
	}
	if math.IsNaN(c.LatencyTolerance) || c.LatencyTolerance < 1.1 {
		bad("latency_tolerance", "%v must be at least 1.1 (a multiple of the usual latency)", c.LatencyTolerance)
	}
	if math.IsNaN(c.Backoff) || c.Backoff < 0.5 || c.Backoff > 0.99 {
		bad("backoff", "%v must be between 0.5 and 0.99", c.Backoff)
	}
	if c.OutageFailures < 1 {
		bad("outage_failures", "%d must be at least 1", c.OutageFailures)
	}
	if c.ProbeInterval < 10*time.Millisecond || c.ProbeInterval > MaxSpan {
		bad("probe_interval", "%v is out of range; use a duration between 10ms and %s", c.ProbeInterval, span(MaxSpan))
	}
	if c.MaxHold < time.Second || c.MaxHold > MaxSpan {
		bad("max_hold", "%v is out of range; use a duration between 1s and %s (Retry-After counts whole seconds)", c.MaxHold, span(MaxSpan))
	}
	if c.HoldPoll < time.Millisecond || c.HoldPoll > 10*time.Second {
		bad("hold_poll", "%v must be between 1ms and 10s", c.HoldPoll)
	}
	return errors.Join(errs...)
}

func rateInRange(r float64) bool { return r >= MinRate && r <= MaxRate } // false for NaN

// rateText prints 1e6 as 1000000, as the documentation does.
func rateText(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

// span prints a whole number of hours as "24h", not "24h0m0s".
func span(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// burstFor is the GCRA burst at rate for resync calls; live calls get
// LiveShare of a second's worth more, so they pass while resync saturates.
// It stays within [1, MaxBurst] for any rate.
func (c Config) burstFor(rate float64, p Priority) int {
	rate = ClampRate(rate)
	b := c.Burst
	if b == 0 {
		b = max(1, int(math.Ceil(rate*0.05)))
	}
	if p == Live {
		b += max(1, int(math.Ceil(rate*c.LiveShare)))
	}
	return ClampBurst(b)
}
