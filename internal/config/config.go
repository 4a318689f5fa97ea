// Package config is eventsync's one YAML configuration file, shared by every
// subcommand. Every scalar key can be overridden by an environment variable
// named after its path (worker.concurrency → EVENTSYNC_WORKER_CONCURRENCY),
// and command-line flags override both. The file is validated at start and
// every error names the key at fault.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
)

// Config is the whole file. See docs/configuration.md for every key.
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
	// DataDir holds embedded-mode data (NATS JetStream files).
	DataDir string `yaml:"data_dir" doc:"directory for embedded-mode data (default ./eventsync-data)"`

	Worker   Worker   `yaml:"worker"`
	Throttle Throttle `yaml:"throttle"`
	Admin    Admin    `yaml:"admin"`
	Log      Log      `yaml:"log"`

	// Sink is the declarative HTTP sink (package httpsink). Decoding it
	// here, strictly, keeps error line numbers true to the user's file.
	Sink httpsink.Config `yaml:"sink" doc:"-"`
}

// Worker tunes `eventsync worker`.
type Worker struct {
	Concurrency        int           `yaml:"concurrency" doc:"events in flight at once (default 256)"`
	ResyncConcurrency  int           `yaml:"resync_concurrency" doc:"most of the concurrency resync events may hold, so live events always find a slot (default 3/4 of concurrency)"`
	Prefetch           int           `yaml:"prefetch" doc:"unsettled deliveries per stream (default = concurrency)"`
	Streams            []string      `yaml:"streams" doc:"streams to consume, comma-separated in the environment (default live,resync)"`
	LeaseTTL           time.Duration `yaml:"lease_ttl" doc:"per-entity lease, renewed every third of it while calls run; a killed worker's keys are free after it (default 10s)"`
	MaxAttempts        int           `yaml:"max_attempts" doc:"failed API calls (5xx, timeouts, transport errors, 429s) of one version before it is parked; waiting never counts (default 25)"`
	BackoffBase        time.Duration `yaml:"backoff_base" doc:"first retry delay (default 1s)"`
	BackoffMax         time.Duration `yaml:"backoff_max" doc:"longest retry delay (default 5m)"`
	MaxEventBytes      int           `yaml:"max_event_bytes" doc:"larger events are parked (default 1048576)"`
	ShutdownGrace      time.Duration `yaml:"shutdown_grace" doc:"time in-flight events get to finish on SIGTERM (default 30s)"`
	LookupBeforeCreate bool          `yaml:"lookup_before_create" doc:"look every create up by external id first (one more call per create); for a first sync into an API that already holds records (default false)"`
	BreakerFails       int           `yaml:"breaker_failures" doc:"consecutive API failures that stop pulling (default 10)"`
	BreakerOpenFor     time.Duration `yaml:"breaker_open_for" doc:"first pause after the breaker opens; doubles up to 30s (default 1s)"`
}

// Throttle is the throughput control in front of the sink: a cluster-wide
// rate shared through the state store, adaptive concurrency per process,
// Retry-After and outages honoured by every process, live before resync.
type Throttle struct {
	// Enabled turns the throttle off when false. It is on by default: the
	// fleet then learns the API's limit and shares one budget and every
	// Retry-After; off, each process only honours what it sees itself.
	Enabled         *bool `yaml:"enabled" doc:"throughput control in front of the sink: learned or configured rate shared by every process, adaptive concurrency, cluster-wide Retry-After and outage probes, live before resync (default true)"`
	throttle.Config `yaml:",inline"`
}

// On reports whether the throttle is enabled (on by default).
func (t Throttle) On() bool { return t.Enabled == nil || *t.Enabled }

// Admin is the HTTP port for /metrics and /healthz.
type Admin struct {
	Listen string `yaml:"listen" doc:"admin HTTP address for /metrics, /healthz, /status (default 127.0.0.1:9090; \"off\" disables)"`
}

// Log configures log/slog.
type Log struct {
	Level  string `yaml:"level" doc:"debug, info, warn or error (default info)"`
	Format string `yaml:"format" doc:"text or json (default text)"`
}

// EnvPrefix starts every environment override.
const EnvPrefix = "EVENTSYNC_"

// Load reads path (empty: no file) and applies environment overrides.
func Load(path string) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w (pass --config with an existing YAML file)", err)
		}
		parsed, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		cfg = parsed
	}
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML strictly: unknown keys are errors with their line.
func Parse(data []byte) (*Config, error) {
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) { // an empty file is a valid, empty config
			return cfg, nil
		}
		return nil, fmt.Errorf("invalid YAML: %w", err)
	}
	return cfg, nil
}

// HasSink reports whether the file configures any sink entity.
func (c *Config) HasSink() bool { return len(c.Sink.EntityConfigs) > 0 }

// EnvVar describes one environment override, for documentation.
type EnvVar struct {
	Name string
	Key  string
	Doc  string
}

// EnvVars lists every override in file order.
func EnvVars() []EnvVar {
	var out []EnvVar
	walk(reflect.ValueOf(&Config{}).Elem(), "", func(key string, f reflect.StructField, _ reflect.Value) {
		out = append(out, EnvVar{Name: envName(key), Key: key, Doc: f.Tag.Get("doc")})
	})
	return out
}

func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// ApplyEnv overrides keys from the environment; lookup is os.LookupEnv.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	var errs []error
	walk(reflect.ValueOf(c).Elem(), "", func(key string, _ reflect.StructField, v reflect.Value) {
		name := envName(key)
		raw, ok := lookup(name)
		if !ok {
			return
		}
		if err := setScalar(v, raw); err != nil {
			errs = append(errs, fmt.Errorf("environment %s (config key %s): %w", name, key, err))
		}
	})
	return errors.Join(errs...)
}

var durationType = reflect.TypeOf(time.Duration(0))

// walk visits every scalar field with its dotted YAML key.
func walk(v reflect.Value, prefix string, fn func(key string, f reflect.StructField, v reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name := strings.Split(tag, ",")[0]
		if f.Anonymous && strings.Contains(tag, ",inline") && f.Type.Kind() == reflect.Struct {
			walk(v.Field(i), prefix, fn)
			continue
		}
		if name == "" || name == "-" || f.Tag.Get("doc") == "-" {
			continue
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			walk(fv, key, fn)
			continue
		}
		fn(key, f, fv)
	}
}

func setScalar(v reflect.Value, raw string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 500ms, 30s or 5m", raw)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(raw)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(raw)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		v.Set(reflect.ValueOf(&b))
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}

// Validate checks values that need no connection; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	checkScheme := func(key, val string, schemes ...string) {
		if val == "" {
			return
		}
		for _, s := range schemes {
			if strings.HasPrefix(val, s+"://") {
				return
			}
		}
		errs = append(errs, fmt.Errorf("%s: %q has an unsupported scheme; use one of %s", key, redact(val), strings.Join(schemes, "://, ")+"://"))
	}
	checkScheme("bus", c.Bus, "amqp", "amqps", "nats")
	checkScheme("store", c.Store, "postgres", "postgresql", "redis", "rediss", "nats")
	checkScheme("source", c.Source, "postgres", "postgresql", "sqlite")
	if c.HasSink() {
		if err := c.Sink.WithDefaults().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Throttle.Config.WithDefaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Worker.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("worker.concurrency: %d must be positive", c.Worker.Concurrency))
	}
	for _, s := range c.Worker.Streams {
		if s != "live" && s != "resync" {
			errs = append(errs, fmt.Errorf("worker.streams: unknown stream %q; use live and/or resync", s))
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

// redact hides a URL's password for error messages and logs.
func redact(raw string) string {
	at := strings.Index(raw, "@")
	scheme := strings.Index(raw, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return raw
	}
	userinfo := raw[scheme+3 : at]
	if colon := strings.Index(userinfo, ":"); colon >= 0 {
		return raw[:scheme+3] + userinfo[:colon] + ":xxxxx" + raw[at:]
	}
	return raw
}

// Redact is exported for commands that log URLs.
func Redact(raw string) string { return redact(raw) }

// EnvTable renders the override table for docs, in file order.
func EnvTable() string {
	var b strings.Builder
	b.WriteString("| config key | environment variable | meaning |\n|---|---|---|\n")
	for _, v := range EnvVars() {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", v.Key, v.Name, v.Doc)
	}
	return b.String()
}
