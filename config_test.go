package eventsync

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/throttle"
)

func sinkConfig(timeout time.Duration) httpsink.Config {
	return httpsink.Config{
		Defaults:      httpsink.Defaults{BaseURL: "http://127.0.0.1:8081", Timeout: timeout},
		EntityConfigs: map[string]httpsink.EntityConfig{"listing": {Collection: "listings"}},
	}
}

func TestValidateLeaseTTLAgainstSinkTimeout(t *testing.T) {
	cfg := Config{Worker: WorkerConfig{LeaseTTL: time.Second}, Sink: sinkConfig(5 * time.Second)}
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "worker.lease_ttl: 1s is shorter than the sink timeout 5s (sink.defaults.timeout)") || !strings.Contains(err.Error(), "at least 5s") {
		t.Fatalf("want a worker.lease_ttl error naming the 5s timeout, got %v", err)
	}
	slow := sinkConfig(2 * time.Second)
	slow.EntityConfigs["review"] = httpsink.EntityConfig{Collection: "reviews", Timeout: 20 * time.Second}
	err = Config{Sink: slow}.Validate() // default lease 10s
	if err == nil || !strings.Contains(err.Error(), "sink timeout 20s (sink.entities.review.timeout)") {
		t.Fatalf("want the error to name the key of review's 20s timeout, got %v", err)
	}
	if err := (Config{Worker: WorkerConfig{LeaseTTL: 5 * time.Second}, Sink: sinkConfig(5 * time.Second)}).Validate(); err != nil {
		t.Fatalf("a lease as long as the timeout is valid: %v", err)
	}
	if err := (Config{Sink: sinkConfig(0)}).Validate(); err != nil {
		t.Fatalf("the defaults (10s lease, 10s timeout) are valid: %v", err)
	}
}

func TestValidateAsksTheRegistryForSchemes(t *testing.T) {
	err := Config{Bus: "kafka://broker:9092", Store: "mysql://u:secret@db/x", Source: "sqlite:///app.db"}.Validate()
	if err == nil {
		t.Fatal("unknown schemes were accepted")
	}
	msg := err.Error()
	for _, want := range []string{`bus: "kafka://broker:9092" has an unsupported scheme; use amqp://`, `store: "mysql://u:xxxxx@db/x" has an unsupported scheme; use postgres://`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "secret") || strings.Contains(msg, "source") {
		t.Errorf("error leaks a password or blames the valid source:\n%s", msg)
	}
	for kind, want := range map[string]string{"bus": "amqps", "store": "rediss", "source": "sqlite"} {
		if !slices.Contains(Schemes(kind), want) {
			t.Errorf("Schemes(%q) = %v lacks %s", kind, Schemes(kind), want)
		}
	}
}

func TestValidateReportsEverySettingAtOnce(t *testing.T) {
	err := Config{Worker: WorkerConfig{Concurrency: -1, Streams: []string{"lve"}}, Log: LogConfig{Level: "loud"}}.Validate()
	if err == nil {
		t.Fatal("invalid settings were accepted")
	}
	for _, want := range []string{"worker.concurrency", "worker.streams", "log.level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %s:\n%v", want, err)
		}
	}
}

func TestWorkerDefaultsComeFromTheEngine(t *testing.T) {
	d := WorkerConfig{Concurrency: 64}.WithDefaults()
	if d.Concurrency != 64 || d.Prefetch != 64 || d.LeaseTTL != 10*time.Second || d.BreakerMaxOpenFor != 30*time.Second || len(d.Streams) != 2 {
		t.Fatalf("unexpected defaults: %+v", d)
	}
	if got := d.engine(); got.Concurrency != 64 || got.Breaker.MaxOpenFor != 30*time.Second || got.LockedRetryDelay != time.Second {
		t.Fatalf("defaults do not map back to the engine: %+v", got)
	}
}

func TestNoDeploymentWithoutURLOrDataDir(t *testing.T) {
	c, err := Open(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Bus(context.Background()); err == nil || !strings.Contains(err.Error(), "no bus: set the bus URL, or a data directory") {
		t.Fatalf("want an error naming the missing bus, got %v", err)
	}
	if _, err := c.Source(context.Background()); err == nil || !strings.Contains(err.Error(), "no source") {
		t.Fatalf("want an error naming the missing source, got %v", err)
	}
	if _, err := c.Sink(context.Background()); err == nil || !strings.Contains(err.Error(), "no sink") {
		t.Fatalf("want an error naming the missing sink, got %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("a closed client opened a store: %v", err)
	}
}

// throttle.max_in_flight follows worker.concurrency unless set; set below
// it, the configuration is valid (a hard cap of the API's) but warned
// about, naming both keys.
func TestMaxInFlightFollowsWorkerConcurrency(t *testing.T) {
	cfg := Config{Worker: WorkerConfig{Concurrency: 1000}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if m := cfg.WithDefaults().Throttle.MaxInFlight; m != 0 {
		t.Fatalf("throttle.max_in_flight defaults to %d; want 0, following worker.concurrency", m)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("warnings for the defaults: %q", w)
	}
	cfg.Throttle.MaxInFlight = 256
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a cap below the concurrency is valid: %v", err)
	}
	w := cfg.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "throttle.max_in_flight (256)") || !strings.Contains(w[0], "worker.concurrency (1000)") {
		t.Fatalf("warnings = %q; want one naming throttle.max_in_flight (256) and worker.concurrency (1000)", w)
	}
	off := false
	cfg.Throttle.Enabled = &off
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("warnings with the throttle off: %q", w)
	}
	if w := (Config{Throttle: ThrottleConfig{Config: throttle.Config{MaxInFlight: 300}}}).Warnings(); len(w) != 0 {
		t.Fatalf("warnings for a cap above the default concurrency: %q", w)
	}
	low := Config{Worker: WorkerConfig{Concurrency: 512, Prefetch: 64}}
	if w := low.Warnings(); len(w) != 1 || !strings.Contains(w[0], "worker.prefetch (64)") || !strings.Contains(w[0], "worker.concurrency (512)") {
		t.Fatalf("warnings = %q; want one naming worker.prefetch (64) and worker.concurrency (512)", w)
	}
	if w := (Config{Worker: WorkerConfig{Concurrency: 64, Prefetch: 128}}).Warnings(); len(w) != 0 {
		t.Fatalf("warnings for a prefetch above the concurrency: %q", w)
	}
}

// worker.debounce is read from YAML as an entity-to-window map, raises
// the default prefetch (a window's events wait unacknowledged), and a
// prefetch set below that is warned about with the rate it allows.
func TestWorkerDebounceConfig(t *testing.T) {
	var cfg Config
	if err := yaml.Unmarshal([]byte("worker:\n  concurrency: 100\n  debounce:\n    listing: 250ms\n    \"*\": 100ms\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if want := map[string]time.Duration{"listing": 250 * time.Millisecond, "*": 100 * time.Millisecond}; !maps.Equal(cfg.Worker.Debounce, want) {
		t.Fatalf("worker.debounce = %v, want %v", cfg.Worker.Debounce, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if p := cfg.WithDefaults().Worker.Prefetch; p != 1600 {
		t.Errorf("default prefetch with debounce = %d, want 16 × concurrency = 1600", p)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Errorf("warnings for the defaults with debounce: %q", w)
	}
	cfg.Worker.Prefetch = 200
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "worker.prefetch (200)") || !strings.Contains(w[0], "800 per second") || !strings.Contains(w[0], "(1600 with debounce)") {
		t.Errorf("warnings = %q; want one naming worker.prefetch (200), the 800 events/s its 250ms window allows, and the default 1600", w)
	}
	cfg.Worker.Debounce["listing"] = time.Minute
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "worker.debounce.listing") {
		t.Errorf("a window longer than half the lease TTL: %v, want an error naming worker.debounce.listing", err)
	}
}
