package throttle_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/throttle"
)

func TestConfigDefaultsValidate(t *testing.T) {
	if err := (throttle.Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	bad := throttle.Config{Rate: -1, Burst: -1, MaxInFlight: -1, LiveShare: 0.95, Backoff: 0.2, HoldPoll: time.Hour}.WithDefaults()
	err := bad.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, key := range []string{"throttle.rate", "throttle.burst", "throttle.max_in_flight", "throttle.live_share", "throttle.backoff", "throttle.hold_poll"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s: %v", key, err)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	var c throttle.Config
	err := yaml.Unmarshal([]byte("rate: 500\nmax_in_flight: 64\nprobe_interval: 2s\nlive_share: 0.25\n"), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Rate != 500 || c.MaxInFlight != 64 || c.ProbeInterval != 2*time.Second || c.LiveShare != 0.25 {
		t.Fatalf("decoded %+v", c)
	}
}

// Settings outside what every limiter adapter accepts are refused, each
// error naming the key and the allowed range.
func TestConfigRefusesOutOfRange(t *testing.T) {
	for _, c := range []struct {
		cfg      throttle.Config
		key, rng string
	}{
		{throttle.Config{Rate: 1e-4}, "throttle.rate", "between 0.001 and 1000000"},
		{throttle.Config{Rate: 1e7}, "throttle.rate", "between 0.001 and 1000000"},
		{throttle.Config{Rate: math.Inf(1)}, "throttle.rate", "between 0.001 and 1000000"},
		{throttle.Config{Rate: math.NaN()}, "throttle.rate", "between 0.001 and 1000000"},
		{throttle.Config{Burst: throttle.MaxBurst + 1}, "throttle.burst", "between 0 and 1000000"},
		{throttle.Config{Burst: 1 << 40}, "throttle.burst", "between 0 and 1000000"},
		{throttle.Config{InitialRate: 1e-4}, "throttle.initial_rate", "between 0.001 and 1000000"},
		{throttle.Config{InitialRate: 2e6}, "throttle.initial_rate", "between 0.001 and 1000000"},
		{throttle.Config{MaxHold: 48 * time.Hour}, "throttle.max_hold", "between 1s and 24h"},
		{throttle.Config{ProbeInterval: 48 * time.Hour}, "throttle.probe_interval", "between 10ms and 24h"},
	} {
		err := c.cfg.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.rng) {
			t.Errorf("%+v: %v; want an error naming %s and %q", c.cfg, err, c.key, c.rng)
		}
	}
	for _, cfg := range []throttle.Config{
		{Rate: throttle.MinRate, InitialRate: throttle.MinRate}, {Rate: throttle.MaxRate, InitialRate: throttle.MaxRate, Burst: throttle.MaxBurst},
		{MaxHold: throttle.MaxSpan, ProbeInterval: throttle.MaxSpan},
	} {
		if err := cfg.WithDefaults().Validate(); err != nil {
			t.Errorf("%+v refused: %v", cfg, err)
		}
	}
}
