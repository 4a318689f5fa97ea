package demo

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/setting"
)

// Fault levels of the fake API and of the chaos between bus and workers.
const (
	FaultsNone      = "none"
	FaultsRealistic = "realistic"
	FaultsHeavy     = "heavy"
)

// Config tunes one demo run. Zero values take the defaults of WithDefaults.
type Config struct {
	// Entities is the number of listings the application starts with; all
	// of them are synced first (the initial sync) and again by the resync.
	// Default 10000.
	Entities int
	// Duration is how long the application workload writes after the
	// initial sync. The resync starts half way through it. Default 20s.
	Duration time.Duration
	// Rate is the workload's transactions per second (each inserts, updates
	// or deletes one to five rows). Default 100.
	Rate int
	// Workers is the number of in-process workers, each with its own bus,
	// store and HTTP connections as if it were its own process. Default 4.
	Workers int
	// Concurrency is the events each worker has in flight at once. Default 64.
	Concurrency int
	// Faults is none, realistic (default) or heavy; see FaultPlan.
	Faults string
	// DataDir holds the embedded NATS data, the SQLite database, the fake
	// API's state file and the log. Empty means a new temporary directory.
	// A given directory must be empty, new, or one an earlier demo made; it
	// is cleared first.
	DataDir string
	// Seed feeds the workload, the chaos and the fake API's fault dice;
	// 0 picks one at random (the report prints it).
	Seed uint64
	// DrainTimeout bounds the wait for the system to go quiet at the end
	// and after the resync. Default 2m.
	DrainTimeout time.Duration

	// Progress receives the live progress; nil prints none.
	Progress io.Writer
	// Interactive redraws one progress line in place (a terminal);
	// otherwise a line is printed every ProgressEvery.
	Interactive bool
	// ProgressEvery is the interval of non-interactive progress lines.
	// Default 2s.
	ProgressEvery time.Duration
	// Width truncates interactive progress lines; 0 means no limit.
	Width int
	// Logger receives the components' logs. Nil means a file demo.log in
	// DataDir, so that logs do not garble the progress line.
	Logger *slog.Logger
}

// WithDefaults returns c with unset fields at their defaults.
func (c Config) WithDefaults() Config {
	if c.Entities == 0 {
		c.Entities = 10000
	}
	if c.Duration == 0 {
		c.Duration = 20 * time.Second
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Concurrency == 0 {
		c.Concurrency = 64
	}
	if c.Faults == "" {
		c.Faults = FaultsRealistic
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 2 * time.Minute
	}
	if c.ProgressEvery == 0 {
		c.ProgressEvery = 2 * time.Second
	}
	return c
}

// Validate reports every invalid setting, each marked with its setting key
// (internal/setting: demo.entities, ...).
func (c Config) Validate() error {
	var errs []error
	if c.Entities < 1 || c.Entities > 10_000_000 {
		errs = append(errs, setting.Errorf("demo.entities", "demo: entities %d: use 1 to 10000000", c.Entities))
	}
	if c.Duration < time.Second || c.Duration > 24*time.Hour {
		errs = append(errs, setting.Errorf("demo.duration", "demo: duration %s: use at least 1s (e.g. 20s) and at most 24h", c.Duration))
	}
	if c.Rate < 1 || c.Rate > 100_000 {
		errs = append(errs, setting.Errorf("demo.rate", "demo: rate %d: use 1 to 100000 transactions per second", c.Rate))
	}
	if c.Workers < 1 || c.Workers > 64 {
		errs = append(errs, setting.Errorf("demo.workers", "demo: workers %d: use 1 to 64", c.Workers))
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		errs = append(errs, setting.Errorf("demo.concurrency", "demo: concurrency %d: use 1 to 4096 events in flight per worker", c.Concurrency))
	}
	if _, err := Plan(c.Faults); err != nil {
		errs = append(errs, err)
	}
	if c.DrainTimeout < time.Second {
		errs = append(errs, fmt.Errorf("drain timeout %s: use at least 1s", c.DrainTimeout))
	}
	if c.ProgressEvery <= 0 {
		errs = append(errs, fmt.Errorf("progress interval %s must be positive", c.ProgressEvery))
	}
	return errors.Join(errs...)
}

// FaultPlan is what one fault level injects.
type FaultPlan struct {
	// API are the fake API's steady faults.
	API fakeapi.Faults
	// Outages start at these fractions of the workload duration.
	Outages []Outage
	// DuplicateRate is the fraction of deliveries the chaos layer copies
	// back onto their stream before the worker sees them.
	DuplicateRate float64
	// ReorderRate is the fraction of deliveries handed back with a short
	// delayed retry, so later events overtake them.
	ReorderRate float64
	// ReorderMax bounds that delay.
	ReorderMax time.Duration
	// SinkTimeout is the HTTP client's deadline per call; writes the API
	// holds longer (API.TimeoutHold) time out although they landed. 2s, not
	// less: on a loaded machine ordinary calls can take over a second, and
	// spurious timeouts only add retries.
	SinkTimeout time.Duration
}

// Outage is one API outage during the workload.
type Outage struct {
	At  float64 // fraction of the workload duration
	For time.Duration
}

// Plan returns the fault plan of a level.
func Plan(level string) (FaultPlan, error) {
	switch level {
	case FaultsNone:
		return FaultPlan{SinkTimeout: 5 * time.Second}, nil
	case FaultsRealistic:
		return FaultPlan{
			API: fakeapi.Faults{
				Latency:     fakeapi.Duration(5 * time.Millisecond),
				Jitter:      fakeapi.Duration(10 * time.Millisecond),
				ErrorRate:   0.02,
				TimeoutRate: 0.01,
				TimeoutHold: fakeapi.Duration(3 * time.Second),
				// Well above what the demo needs: rate limiting is shown by
				// heavy, here it only guards against runaway retries.
				RateLimit: 3000,
			},
			Outages:       []Outage{{At: 0.3, For: 2 * time.Second}},
			DuplicateRate: 0.02,
			ReorderRate:   0.03,
			ReorderMax:    300 * time.Millisecond,
			SinkTimeout:   2 * time.Second,
		}, nil
	case FaultsHeavy:
		return FaultPlan{
			API: fakeapi.Faults{
				Latency:     fakeapi.Duration(10 * time.Millisecond),
				Jitter:      fakeapi.Duration(20 * time.Millisecond),
				ErrorRate:   0.10,
				TimeoutRate: 0.05,
				TimeoutHold: fakeapi.Duration(3 * time.Second),
				// Tight enough that 429s with Retry-After show up.
				RateLimit: 400,
				// The ceiling seen in production: more concurrent calls fail.
				MaxConcurrency: 150,
			},
			Outages:       []Outage{{At: 0.2, For: 2 * time.Second}, {At: 0.7, For: 3 * time.Second}},
			DuplicateRate: 0.05,
			ReorderRate:   0.10,
			ReorderMax:    time.Second,
			SinkTimeout:   2 * time.Second,
		}, nil
	}
	return FaultPlan{}, setting.Errorf("demo.faults", "demo: faults %q: use none, realistic or heavy", level)
}
