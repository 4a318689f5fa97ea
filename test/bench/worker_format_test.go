package bench

import (
	"strings"
	"testing"
	"time"
)

// The ratio of eventsync to a baseline is taken within each round, then
// summarised, so a round where the machine was slower for both does not
// widen the range.
func TestFormatScenarioRatiosAreRoundByRound(t *testing.T) {
	es := contender{id: "es", name: "eventsync", kind: kindEventsync, store: "redis"}
	base := contender{id: "post", name: "raw POST", kind: "post"}
	sc := compareScenario{name: "zero", concurrency: 256, contenders: []contender{es, base}}
	run := func(seconds float64) *runResult {
		return &runResult{elapsed: time.Duration(seconds * float64(time.Second)), rss: 30 << 20, cpu: time.Second, peakInFlight: 10}
	}
	// Round 1 fast, round 2 twice as slow for both, round 3 failed for the baseline.
	results := map[string][]*runResult{
		es.name:   {run(2), run(4), run(3)},
		base.name: {run(1), run(2), nil},
	}
	out := formatScenario(sc, 1000, results, "1 1 1", "2 2 2")
	for _, want := range []string{
		"| eventsync | 500 / 250 / 333 | 250–500 | 30 MB | 1000 ms | 10 |",
		"| raw POST | 1000 / 500 / failed | 500–1000 | 30 MB | 1000 ms | 10 |",
		"| eventsync | 50 % |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}
