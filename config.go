package eventsync

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/engine"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
)

// Config is eventsync's configuration: the YAML file every eventsync command
// reads (docs/configuration.md lists every key and its environment
// variable), or the same values set in Go. The zero value is not usable: a
// deployment needs a bus and a state store, given as URLs or as an embedded
// deployment under DataDir, or injected with WithBus and WithStore.
type Config struct {
	// Bus URL: amqp://… (RabbitMQ) or nats://… (NATS JetStream). Empty
	// means the embedded NATS server under DataDir.
	Bus string `yaml:"bus" doc:"bus URL: amqp://user:pass@host:5672/ or nats://host:4222; empty = embedded NATS under data_dir"`
	// Namespace prefixes every queue, stream, exchange, key and table so
	// several deployments can share one broker or database.
	Namespace string `yaml:"namespace" doc:"prefix of queues, streams, keys and tables (default eventsync)"`
	// Store URL: postgres://…, redis://… or nats://…; empty = embedded.
	Store string `yaml:"store" doc:"state store URL: postgres://…, redis://… or nats://…; empty = embedded NATS KV under data_dir"`
	// Source URL of the application database: postgres://… or sqlite://path.
	Source string `yaml:"source" doc:"application database: postgres://… or sqlite://path"`
	// DataDir holds an embedded deployment (a NATS JetStream server serving
	// as bus and store). It is used only when Bus or Store is empty; with
	// both empty and no DataDir there is no deployment to connect to.
	DataDir string `yaml:"data_dir" doc:"directory of an embedded deployment (NATS JetStream as bus and store), used when bus or store is empty"`
	// BusPartitions turns on per-key ordered mode when above 0: each
	// stream is split into this many partitions by the event's entity and
	// key, each consumed by one worker at a time, so one key's events
	// reach one worker in order. Every process of a deployment (relays,
	// workers, publish, resync) must use the same value.
	BusPartitions int `yaml:"bus_partitions" doc:"per-key ordered mode: partitions per stream, each consumed by one worker at a time (RabbitMQ: consistent-hash exchange plugin; NATS: nats-server 2.11+); the same in every process; 0 = competing consumers (default 0)"`
	// BusTLS and StoreTLS verify the bus's and the store's TLS
	// connections (amqps://, tls:// or nats://, rediss://) with a custom
	// certificate authority and present a client certificate to servers
	// that require one. A PostgreSQL store takes its TLS settings in its
	// URL instead (sslmode=verify-full&sslrootcert=…), as libpq does.
	BusTLS   TLSConfig `yaml:"bus_tls"`
	StoreTLS TLSConfig `yaml:"store_tls"`
	// BusNATS and StoreNATS authenticate a NATS bus or store with a
	// credentials file (a user JWT and its NKey seed) or an NKey seed file.
	BusNATS   NATSAuth `yaml:"bus_nats"`
	StoreNATS NATSAuth `yaml:"store_nats"`

	Worker   WorkerConfig   `yaml:"worker"`
	Throttle ThrottleConfig `yaml:"throttle"`
	Admin    AdminConfig    `yaml:"admin"`
	Log      LogConfig      `yaml:"log"`

	// Sink is the declarative HTTP sink (package httpsink), used when no
	// Go sink is given with WithSink.
	Sink httpsink.Config `yaml:"sink" doc:"-"`
}

// TLSConfig is the TLS settings block of a connection: bus_tls,
// store_tls, and sink.tls (httpsink.TLSConfig is the same type).
type TLSConfig = tlsconf.Config

// NATSAuth authenticates a NATS connection beyond what its URL carries
// (nats://user:pass@host or nats://token@host).
type NATSAuth struct {
	CredentialsFile string `yaml:"credentials_file" doc:"NATS credentials file (.creds: a user JWT and its NKey seed), as nsc writes it"`
	NKeyFile        string `yaml:"nkey_file" doc:"file holding a NATS user's NKey seed (SU…), for servers that list NKey users"`
}

// WorkerConfig tunes workers. Zero values take the defaults named in each
// field's documentation (see WithDefaults).
type WorkerConfig struct {
	Concurrency        int           `yaml:"concurrency" doc:"events in flight at once (default 256)"`
	ResyncConcurrency  int           `yaml:"resync_concurrency" doc:"most of the concurrency resync events may hold, so live events always find a slot (default 3/4 of concurrency)"`
	Prefetch           int           `yaml:"prefetch" doc:"unsettled deliveries per stream (default = concurrency; 16 × concurrency with debounce)"`
	Streams            []string      `yaml:"streams" doc:"streams to consume, comma-separated in the environment (default live,resync)"`
	LeaseTTL           time.Duration `yaml:"lease_ttl" doc:"per-entity lease, renewed every third of it while calls run; a killed worker's keys are free after it; at least the sink's longest timeout (default 10s)"`
	MaxAttempts        int           `yaml:"max_attempts" doc:"failed API calls (5xx, timeouts, transport errors, 429s) of one version before it is parked; waiting never counts (default 25)"`
	BackoffBase        time.Duration `yaml:"backoff_base" doc:"first retry delay (default 1s)"`
	BackoffMax         time.Duration `yaml:"backoff_max" doc:"longest retry delay (default 5m)"`
	LockedRetryDelay   time.Duration `yaml:"locked_retry_delay" doc:"wait of an event whose entity another worker holds, bounded by that lease (default 1s)"`
	MaxEventBytes      int           `yaml:"max_event_bytes" doc:"larger events are parked (default 1048576)"`
	ShutdownGrace      time.Duration `yaml:"shutdown_grace" doc:"time in-flight events get to finish on SIGTERM (default 30s)"`
	ControlPoll        time.Duration `yaml:"control_poll" doc:"how often pause flags are read (default 500ms)"`
	LookupBeforeCreate bool          `yaml:"lookup_before_create" doc:"look every create up by external id first (one more call per create); for a first sync into an API that already holds records (default false)"`
	BreakerFails       int           `yaml:"breaker_failures" doc:"consecutive API failures that stop pulling (default 10)"`
	BreakerOpenFor     time.Duration `yaml:"breaker_open_for" doc:"first pause after the breaker opens; doubles up to breaker_max_open_for (default 1s)"`
	BreakerMaxOpenFor  time.Duration `yaml:"breaker_max_open_for" doc:"longest pause between probes while the API stays down (default 30s)"`
	BatchLinger        time.Duration `yaml:"batch_linger" doc:"with a sink that has bulk endpoints, how long a write waits for others of its stream, entity and op to share one batch call; a full batch goes at once (default 5ms)"`
	// Debounce maps an entity ("*": every other) to a window: a burst of
	// live changes to one key within it costs one API call, the newest
	// (docs/configuration.md, "Debounce"). A map: YAML only.
	Debounce map[string]time.Duration `yaml:"debounce" doc:"-"`
}

// ThrottleConfig is the throughput control in front of the sink: a
// cluster-wide rate shared through the state store, adaptive concurrency
// per process, Retry-After and outages honoured by every process, live
// before resync.
type ThrottleConfig struct {
	// Enabled turns the throttle off when false. It is on by default: the
	// fleet then learns the API's limit and shares one budget and every
	// Retry-After; off, each process only honours what it sees itself.
	Enabled         *bool `yaml:"enabled" doc:"throughput control in front of the sink: learned or configured rate shared by every process, adaptive concurrency, cluster-wide Retry-After and outage probes, live before resync (default true)"`
	throttle.Config `yaml:",inline"`
}

// On reports whether the throttle is enabled (on by default).
func (t ThrottleConfig) On() bool { return t.Enabled == nil || *t.Enabled }

// AdminConfig is the HTTP port of the eventsync binary for /metrics,
// /healthz and /status. A Go program serves its own metrics from the
// registerer given with WithRegisterer.
type AdminConfig struct {
	Listen string `yaml:"listen" doc:"admin HTTP address for /metrics, /healthz, /status (default 127.0.0.1:9090; \"off\" disables)"`
	// Pprof serves Go's profiler on the admin address. It is off by
	// default: a profile shows the process's internals and costs CPU
	// while it runs, so keep the admin address private when it is on.
	Pprof bool `yaml:"pprof" doc:"serve Go's profiler under /debug/pprof/ on the admin address; keep that address private (default false)"`
}

// LogConfig configures the eventsync binary's log/slog handler. A Go
// program passes its own logger with WithLogger.
type LogConfig struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error (default info)"`
	Format string `yaml:"format" doc:"text or json (default text)"`
}

// DefaultNamespace prefixes queues, keys and tables when Namespace is empty.
const DefaultNamespace = "eventsync"

// HasSink reports whether the configuration declares an HTTP sink entity.
func (c Config) HasSink() bool { return len(c.Sink.EntityConfigs) > 0 }

// WithDefaults returns a copy with every unset value at its default.
func (c Config) WithDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	c.Worker = c.Worker.WithDefaults()
	c.Throttle.Config = c.Throttle.Config.WithDefaults()
	if c.HasSink() {
		c.Sink = c.Sink.WithDefaults()
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	return c
}

// WithDefaults returns a copy with every unset value at the engine's default.
func (w WorkerConfig) WithDefaults() WorkerConfig {
	e := w.engine().WithDefaults()
	out := WorkerConfig{
		Concurrency:        e.Concurrency,
		ResyncConcurrency:  w.ResyncConcurrency, // 0 keeps its meaning: 3/4 of concurrency
		Prefetch:           e.Prefetch,
		LeaseTTL:           e.LeaseTTL,
		MaxAttempts:        e.MaxAttempts,
		BackoffBase:        e.BackoffBase,
		BackoffMax:         e.BackoffMax,
		LockedRetryDelay:   e.LockedRetryDelay,
		MaxEventBytes:      e.MaxEventBytes,
		ShutdownGrace:      e.ShutdownGrace,
		ControlPoll:        e.ControlPoll,
		LookupBeforeCreate: e.LookupBeforeCreate,
		BreakerFails:       e.Breaker.Failures,
		BreakerOpenFor:     e.Breaker.OpenFor,
		BreakerMaxOpenFor:  e.Breaker.MaxOpenFor,
		BatchLinger:        e.BatchLinger,
		Debounce:           e.Debounce,
	}
	for _, s := range e.Streams {
		out.Streams = append(out.Streams, string(s))
	}
	return out
}

// engine is the one mapping from the configuration to the engine's.
func (w WorkerConfig) engine() engine.Config {
	e := engine.Config{
		Concurrency:        w.Concurrency,
		ResyncConcurrency:  w.ResyncConcurrency,
		Prefetch:           w.Prefetch,
		LeaseTTL:           w.LeaseTTL,
		MaxAttempts:        w.MaxAttempts,
		BackoffBase:        w.BackoffBase,
		BackoffMax:         w.BackoffMax,
		LockedRetryDelay:   w.LockedRetryDelay,
		MaxEventBytes:      w.MaxEventBytes,
		ShutdownGrace:      w.ShutdownGrace,
		ControlPoll:        w.ControlPoll,
		LookupBeforeCreate: w.LookupBeforeCreate,
		Breaker:            engine.BreakerConfig{Failures: w.BreakerFails, OpenFor: w.BreakerOpenFor, MaxOpenFor: w.BreakerMaxOpenFor},
		BatchLinger:        w.BatchLinger,
		Debounce:           w.Debounce,
	}
	for _, s := range w.Streams {
		e.Streams = append(e.Streams, bus.Stream(s))
	}
	return e
}

// Validate checks every value that needs no connection, including the
// rules between settings; each error names its configuration key, and all
// of them are reported at once.
func (c Config) Validate() error {
	var errs []error
	for _, chk := range []struct {
		key, url string
		kind     adapterKind
	}{{"bus", c.Bus, kindBus}, {"store", c.Store, kindStore}, {"source", c.Source, kindSource}} {
		if chk.url == "" {
			continue
		}
		if _, err := lookupScheme(chk.kind, chk.url); err != nil {
			errs = append(errs, setting.Errorf(chk.key, "%s: %w", chk.key, err))
		}
	}
	errs = append(errs, validateTLS("bus", c.Bus, c.BusTLS), validateTLS("store", c.Store, c.StoreTLS),
		validateNATS("bus", c.Bus, c.BusNATS), validateNATS("store", c.Store, c.StoreNATS))
	if c.BusPartitions < 0 || c.BusPartitions > 1024 {
		errs = append(errs, setting.Errorf("bus_partitions", "bus_partitions: %d must be 0 (competing consumers) to 1024", c.BusPartitions))
	}
	d := c.WithDefaults()
	if d.HasSink() {
		if err := c.Sink.WithDefaults().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.Throttle.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	w := c.Worker
	if w.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("worker.concurrency: %d must be positive", w.Concurrency))
		w.Concurrency = 0 // so the checks below do not blame the defaults derived from it
	}
	if err := w.engine().WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.HasSink() {
		if timeout, key := longestSinkTimeout(d.Sink); d.Worker.LeaseTTL < timeout {
			errs = append(errs, setting.Errorf("worker.lease_ttl", "worker.lease_ttl: %s is shorter than the sink timeout %s (%s); a call still running when a stalled store lets its lease lapse is abandoned and paid for again, so set worker.lease_ttl to at least %s or shorten the timeout",
				d.Worker.LeaseTTL, timeout, key, timeout))
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q must be debug, info, warn or error", c.Log.Level))
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q must be text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// Warnings lists settings that are valid but cannot do what they seem to
// ask, each naming its keys and the fix; a program logs them at start.
func (c Config) Warnings() []string {
	d := c.WithDefaults()
	var out []string
	// 0 follows the worker; a cap below it leaves events waiting for a slot.
	if m, n := d.Throttle.MaxInFlight, d.Worker.Concurrency; d.Throttle.On() && m > 0 && m < n {
		out = append(out, fmt.Sprintf("throttle.max_in_flight (%d) is below worker.concurrency (%d): at most %d API calls run at once and the other events wait for a slot; set throttle.max_in_flight to 0 to follow worker.concurrency, or lower worker.concurrency", m, n, m))
	}
	// The broker hands a worker at most prefetch deliveries per stream: on
	// one stream, fewer than the concurrency leaves handlers idle.
	if p, n := d.Worker.Prefetch, d.Worker.Concurrency; p > 0 && p < n {
		out = append(out, fmt.Sprintf("worker.prefetch (%d) is below worker.concurrency (%d): the broker hands this worker at most %d deliveries of a stream at once, so on one stream at most %d events are worked on; set worker.prefetch to 0 to follow worker.concurrency, or at least %d", p, n, p, p, n))
	}
	// Debounced events wait unacknowledged: the prefetch bounds how many
	// are in hand, so how much of a burst coalesces and how fast events
	// get through.
	if p, n, w := c.Worker.Prefetch, d.Worker.Concurrency, longestDebounce(d.Worker.Debounce); p > 0 && w > 0 && p < engine.DebouncePrefetch*n {
		out = append(out, fmt.Sprintf("worker.prefetch (%d) is below %d × worker.concurrency (%d) with worker.debounce: a debounced event waits unacknowledged for up to its window (%s), so at most %d live events are in hand, at most %.0f per second get through, and a burst of changes longer than that costs more API calls; set worker.prefetch to 0 (%d with debounce) or raise it",
			p, engine.DebouncePrefetch, n, w, p, float64(p)/w.Seconds(), engine.Config{Concurrency: n, Debounce: d.Worker.Debounce}.WithDefaults().Prefetch))
	}
	return out
}

// longestDebounce is the longest of worker.debounce's windows.
func longestDebounce(windows map[string]time.Duration) time.Duration {
	var longest time.Duration
	for _, w := range windows {
		longest = max(longest, w)
	}
	return longest
}

// longestSinkTimeout returns the longest call timeout of a defaulted sink
// configuration and the key that sets it.
func longestSinkTimeout(s httpsink.Config) (time.Duration, string) {
	longest, key := s.Defaults.Timeout, "sink.defaults.timeout"
	for _, name := range s.Entities() { // sorted: the message is stable
		if t := s.EntityConfigs[name].Timeout; t > longest {
			longest, key = t, "sink.entities."+name+".timeout"
		}
	}
	return longest, key
}

// validateTLS checks key's TLS block (bus_tls, store_tls) against the
// URL it applies to: a block the connection would not use is an error,
// not a silently plain connection.
func validateTLS(key, rawURL string, c TLSConfig) error {
	if c.IsZero() {
		return nil
	}
	tkey := key + "_tls"
	if err := c.Validate(tkey); err != nil {
		return err
	}
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "amqps", "rediss", "tls", "nats":
		return nil // nats:// upgrades to TLS when the block is set
	case "amqp", "redis":
		return setting.Errorf(key, "%s is set but %s %s is not a TLS URL; use %ss://", tkey, key, RedactURL(rawURL), scheme)
	case "postgres", "postgresql":
		return setting.Errorf(key, "%s does not apply to PostgreSQL: put the TLS settings in the %s URL, as libpq reads them: ?sslmode=verify-full&sslrootcert=/path/ca.pem (and sslcert=, sslkey= for a client certificate)", tkey, key)
	case "":
		return setting.Errorf(key, "%s is set but %s is the embedded deployment, which needs no TLS; set the %s URL or remove %s", tkey, key, key, tkey)
	default:
		return setting.Errorf(key, "%s does not apply to %s %s", tkey, key, RedactURL(rawURL))
	}
}

// validateNATS checks key's NATS authentication block (bus_nats,
// store_nats): for a NATS URL only, one way at a time.
func validateNATS(key, rawURL string, a NATSAuth) error {
	if a == (NATSAuth{}) {
		return nil
	}
	nkey := key + "_nats"
	scheme, _, _ := strings.Cut(rawURL, "://")
	if s := strings.ToLower(scheme); s != "nats" && s != "tls" {
		return setting.Errorf(key, "%s is set but %s %q is not a NATS URL (nats:// or tls://)", nkey, key, RedactURL(rawURL))
	}
	if a.CredentialsFile != "" && a.NKeyFile != "" {
		return setting.Errorf(nkey+".credentials_file", "%s: set credentials_file or nkey_file, not both", nkey)
	}
	return nil
}
