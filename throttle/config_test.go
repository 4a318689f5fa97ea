package throttle_test

import (
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
