// Package engine applies entity-change events from the bus to the sink,
// correct under duplicates, reordering, stale events, crashes and many
// concurrent workers. It knows only the ports (bus, store, sink); the
// adapters are chosen by the caller.
//
// The algorithm for one event is documented in docs/ARCHITECTURE.md
// ("Applying one event"), including what happens at every crash point.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
)

// Config tunes a worker engine. Zero values take the defaults of WithDefaults.
type Config struct {
	// WorkerID names this process in leases and heartbeats. Default: host-pid.
	WorkerID string
	// Streams to consume. Default: live and resync.
	Streams []bus.Stream
	// Concurrency is the number of events in flight at once (API calls are
	// the bottleneck, so this is high). Default 256.
	Concurrency int
	// ResyncConcurrency caps the resync stream's share of Concurrency, so a
	// resync that keeps every slot waiting on the API's budget cannot make
	// live events queue for a slot. 0 means three quarters of Concurrency
	// (at least 1); see resyncSlots.
	ResyncConcurrency int
	// Prefetch per stream; default Concurrency, or DebouncePrefetch ×
	// Concurrency when any entity is debounced (see Debounce).
	Prefetch int
	// LeaseTTL is how long an entity's lease lasts without renewal. Leases
	// are renewed every third of it while their calls run, so it need not
	// cover the slowest call; it bounds how long a crashed worker's keys
	// stay locked. Default 10s: renewals every 3.3s survive a stall of
	// over 6s, and the keys of a killed worker are free 10s later.
	LeaseTTL time.Duration
	// MaxAttempts is how many of the API's failures (5xx, timeouts,
	// transport errors, 429s) one version of a key may meet before it is
	// parked. They are counted in the state store across workers and
	// redeliveries; waiting (a locked key, a pause, an outage hold, an
	// unreachable store or limiter) never counts. Default 25.
	MaxAttempts int
	// BackoffBase and BackoffMax shape exponential backoff with jitter.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// LockedRetryDelay is how long an event waits when its entity is leased
	// by another worker process (events of one key in this process wait for
	// each other in memory instead). Default 1s (bounded by the lease's
	// remaining time); retries spread over its last quarter, never above
	// it, so at or below the bus's shortest retry tier they stay in it.
	LockedRetryDelay time.Duration
	// MaxEventBytes larger payloads are parked. Default event.DefaultMaxSize.
	MaxEventBytes int
	// LookupBeforeCreate looks every create up by external id first, at the
	// cost of one more call per create. Turn it on for a first sync into an
	// API that already holds records (created before eventsync, or after a
	// switch to an empty state store), so they are adopted, not duplicated.
	LookupBeforeCreate bool
	// Entities the sink handles; events of other types are parked. Empty
	// means every entity is accepted.
	Entities []string
	// ControlPoll is how often pause flags are read. Default 500ms.
	ControlPoll time.Duration
	// ShutdownGrace lets in-flight events finish on shutdown before their
	// calls are cancelled and the events released. Default 30s.
	ShutdownGrace time.Duration
	// Breaker configures the circuit breaker that stops pulling while the
	// API is down.
	Breaker BreakerConfig
	Logger  *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Sleep waits d, or until ctx ends (then it returns ctx's error). The
	// engine waits with it while the store has not yet confirmed whether a
	// lease it sent calls under was lost. Default: a timer; the simulation
	// passes its own clock's.
	Sleep func(ctx context.Context, d time.Duration) error
	// TracerProvider, when set, traces every delivery: a span per
	// delivery continuing the trace context of its message headers, with
	// child spans for the lease calls and the API calls. nil (the
	// default) turns tracing off, at no cost.
	TracerProvider trace.TracerProvider
	// Throttle, when set, reports the sink's throttle for the heartbeat.
	Throttle func() *control.ThrottleStatus
	// BatchLinger is how long a write waits for others of its kind (stream,
	// entity, op) to share a batch call, when the sink has bulk endpoints
	// (sink.BatchSink); a full batch goes at once. Default 5ms: little
	// beside an API call, and the writes of events pulled together reach
	// the sink within a few milliseconds of each other (their lease round
	// trips end together).
	BatchLinger time.Duration
	// Debounce maps an entity ("*": every entity not named) to a window: a
	// live event of it is applied no sooner than the window after the
	// worker received the oldest version of its key not yet applied, so
	// a burst of changes to one key costs one API call (the newest; the
	// others are settled stale after it). The wait holds no slot, only
	// prefetch: a waiting delivery is unacknowledged, so at most Prefetch
	// live events are in hand at once and at most Prefetch/window per
	// second get through; a burst longer than the prefetch costs more
	// calls. Empty: no debounce.
	Debounce map[string]time.Duration
}

// DebouncePrefetch is the default prefetch, in multiples of the
// concurrency, of a worker that debounces: a window's events wait
// unacknowledged, and a window of 16 API round trips at full concurrency
// (250 ms at 16 ms a call) is a window the worker can hold without
// pulling fewer events than it could apply. Issue 18's hot keys (200 keys
// × 20 versions at once) fit in it at the default concurrency
// (docs/benchmarks.md, "Hot keys: debounce").
const DebouncePrefetch = 16

// maxPrefetch is the most a broker takes: AMQP's prefetch count is 16-bit.
const maxPrefetch = 65535

// DebounceAny is the Debounce key for every entity not named.
const DebounceAny = "*"

// debounceFor is entity's debounce window; 0 for none.
func (c Config) debounceFor(entity string) time.Duration {
	if d, ok := c.Debounce[entity]; ok {
		return d
	}
	return c.Debounce[DebounceAny]
}

// debounces reports whether any entity is debounced.
func (c Config) debounces() bool {
	for _, d := range c.Debounce {
		if d > 0 {
			return true
		}
	}
	return false
}

// BreakerConfig tunes the circuit breaker.
type BreakerConfig struct {
	// Failures is the number of consecutive retryable sink failures that
	// opens the circuit. Default 10.
	Failures int
	// OpenFor is the first pause; it doubles up to MaxOpenFor while probes
	// keep failing. Defaults 1s and 30s.
	OpenFor    time.Duration
	MaxOpenFor time.Duration
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		c.WorkerID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if len(c.Streams) == 0 {
		c.Streams = []bus.Stream{bus.Live, bus.Resync}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 256
	}
	if c.Prefetch == 0 {
		c.Prefetch = c.Concurrency
		if c.debounces() {
			c.Prefetch = min(DebouncePrefetch*c.Concurrency, maxPrefetch)
		}
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 25
	}
	if c.BackoffBase == 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.LockedRetryDelay == 0 {
		c.LockedRetryDelay = time.Second
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = event.DefaultMaxSize
	}
	if c.ControlPoll == 0 {
		c.ControlPoll = 500 * time.Millisecond
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = 10
	}
	if c.Breaker.OpenFor == 0 {
		c.Breaker.OpenFor = time.Second
	}
	if c.Breaker.MaxOpenFor == 0 {
		c.Breaker.MaxOpenFor = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	if c.BatchLinger == 0 {
		c.BatchLinger = 5 * time.Millisecond
	}
	return c
}

// sleep is the default Config.Sleep.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// resyncSlots is the resync stream's cap on in-flight events.
func (c Config) resyncSlots() int {
	if c.ResyncConcurrency > 0 {
		return c.ResyncConcurrency
	}
	return max(1, c.Concurrency*3/4)
}

// Validate reports the first invalid setting, named as in the config file.
func (c Config) Validate() error {
	var errs []error
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("worker.concurrency: %d must be at least 1", c.Concurrency))
	}
	if c.ResyncConcurrency < 0 || c.ResyncConcurrency > c.Concurrency {
		errs = append(errs, fmt.Errorf("worker.resync_concurrency: %d must be between 1 and worker.concurrency (%d), or 0 for three quarters of it", c.ResyncConcurrency, c.Concurrency))
	}
	if c.Prefetch < 1 {
		errs = append(errs, fmt.Errorf("worker.prefetch: %d must be at least 1", c.Prefetch))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("worker.lease_ttl: %s is too short; use at least 1s (leases are renewed every third of it)", c.LeaseTTL))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("worker.max_attempts: %d must be at least 1", c.MaxAttempts))
	}
	if c.BackoffBase <= 0 || c.BackoffMax < c.BackoffBase {
		errs = append(errs, fmt.Errorf("worker.backoff_base/backoff_max: need 0 < base (%s) <= max (%s)", c.BackoffBase, c.BackoffMax))
	}
	if c.MaxEventBytes < 64 {
		errs = append(errs, fmt.Errorf("worker.max_event_bytes: %d is too small", c.MaxEventBytes))
	}
	if c.Breaker.Failures < 1 || c.Breaker.OpenFor <= 0 || c.Breaker.MaxOpenFor < c.Breaker.OpenFor {
		errs = append(errs, errors.New("worker.breaker: need failures >= 1 and 0 < open_for <= max_open_for"))
	}
	if c.BatchLinger < 0 || c.BatchLinger > c.LeaseTTL/10 {
		// The lease is renewed every third of its TTL; a batch must not
		// hold its writes anywhere near that.
		errs = append(errs, fmt.Errorf("worker.batch_linger: %s must be between 0 and a tenth of worker.lease_ttl (%s)", c.BatchLinger, c.LeaseTTL/10))
	}
	for _, entity := range slices.Sorted(maps.Keys(c.Debounce)) {
		d := c.Debounce[entity]
		// A waiting delivery's followers go to the broker's retry after a
		// lease TTL in memory: a window that long would send them there.
		if entity == "" || d < 0 || d > c.LeaseTTL/2 {
			errs = append(errs, fmt.Errorf("worker.debounce.%s: %s must be between 0 and half of worker.lease_ttl (%s), for an entity name or %q", entity, d, c.LeaseTTL/2, DebounceAny))
		}
	}
	for _, s := range c.Streams {
		if _, err := bus.ParseStream(string(s)); err != nil {
			errs = append(errs, fmt.Errorf("worker.streams: %w", err))
		}
	}
	return errors.Join(errs...)
}
