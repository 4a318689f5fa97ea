package sim

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/engine"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// defaultSeeds is how many seeds TestSimulation runs by default (in CI):
// about 20 CPU-seconds under -race, 6 without (measured on the 2-core
// development VM; see docs/benchmarks.md for the soak rate).
const defaultSeeds = 2500

// knownEngineBugs are violation kinds the engine breaks today, each
// reported with the seeds that show it. A seed that breaks only these
// passes (the run logs how many did); delete an entry when its fix lands,
// and the seeds guard against its return.
var knownEngineBugs = map[string]string{}

// TestSimulation runs seeds 1..N of the deterministic simulation (see the
// package doc). EVENTSYNC_SIM_SEEDS sets N (a soak run: 1000000, with go
// test -timeout 0), EVENTSYNC_SIM_FIRST the first seed, and
// EVENTSYNC_SIM_SEED=n replays seed n alone with its whole trace on stdout
// (run it with -v).
func TestSimulation(t *testing.T) {
	if v := os.Getenv("EVENTSYNC_SIM_SEED"); v != "" {
		seed, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("EVENTSYNC_SIM_SEED=%q: %v", v, err)
		}
		res := Run(Options{Seed: seed, Full: os.Stdout})
		t.Logf("seed %d: %d steps, %s", seed, res.Steps, fmtStats(res.Stats))
		for _, v := range res.Violations {
			if _, known := knownEngineBugs[v.Kind]; known {
				t.Logf("known engine bug: %s", v)
			} else {
				t.Errorf("%s", v)
			}
		}
		return
	}
	n := envUint(t, "EVENTSYNC_SIM_SEEDS", defaultSeeds)
	first := envUint(t, "EVENTSYNC_SIM_FIRST", 1)

	var (
		next    atomic.Uint64
		mu      sync.Mutex
		failed  []Result
		known   = map[string]int{}
		total   Stats
		steps   int64
		workers = runtime.GOMAXPROCS(0)
		wg      sync.WaitGroup
	)
	next.Store(first)
	start := time.Now()
	// Stop taking seeds shortly before go test's deadline, so that a soak
	// run too long for it ends with its findings and a hint instead of a
	// timeout panic.
	stopAt, hasDeadline := t.Deadline()
	stopAt = stopAt.Add(-30 * time.Second)
	var ran atomic.Uint64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if hasDeadline && time.Now().After(stopAt) {
					return
				}
				seed := next.Add(1) - 1
				if seed >= first+n {
					return
				}
				res := Run(Options{Seed: seed, Keep: 300})
				ran.Add(1)
				mu.Lock()
				steps += res.Steps
				total.add(res.Stats)
				if unknown := unknownViolations(res); len(unknown) > 0 {
					failed = append(failed, res)
				} else {
					for _, v := range res.Violations {
						known[v.Kind]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("seeds %d..%d: %d runs, %d steps in %s (%.0f seeds/s on %d goroutines); %s",
		first, first+n-1, ran.Load(), steps, elapsed.Round(time.Millisecond), float64(ran.Load())/elapsed.Seconds(), workers, fmtStats(total))
	if ran.Load() < n {
		t.Errorf("go test's -timeout came first: only %d of %d seeds ran; give a soak run -timeout 0", ran.Load(), n)
	}
	for _, kind := range sortedKeys(known) {
		t.Logf("known engine bug %q in %d seeds: %s", kind, known[kind], knownEngineBugs[kind])
	}
	slices.SortFunc(failed, func(a, b Result) int { return cmpUint(a.Seed, b.Seed) })
	byKind := map[string][]Result{}
	for _, res := range failed {
		kind := unknownViolations(res)[0].Kind
		byKind[kind] = append(byKind[kind], res)
	}
	for _, kind := range sortedKeys(byKind) {
		t.Errorf("%q broken in %d seeds: %v", kind, len(byKind[kind]), seedsOf(byKind[kind], 20))
	}
	for i, res := range failed {
		if i == 3 {
			t.Errorf("... and %d more failing seeds: %v", len(failed)-i, seedsOf(failed[i:], 50))
			break
		}
		t.Errorf("%s", failureReport(res))
	}
}

func unknownViolations(res Result) []Violation {
	var out []Violation
	for _, v := range res.Violations {
		if _, known := knownEngineBugs[v.Kind]; !known {
			out = append(out, v)
		}
	}
	return out
}

// failureReport says what broke, how to replay it, and how it came about.
func failureReport(res Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d broke an invariant; replay it with\n\n\tEVENTSYNC_SIM_SEED=%d go test -v -run 'TestSimulation$' ./internal/sim\n\n", res.Seed, res.Seed)
	fmt.Fprintf(&b, "config: %s\n", res.Params)
	for _, v := range res.Violations {
		fmt.Fprintf(&b, "%s\n", v)
	}
	fmt.Fprintf(&b, "trace (step, simulated time, what happened):\n%s", res.Tail)
	return b.String()
}

func seedsOf(rs []Result, limit int) []uint64 {
	var out []uint64
	for i, r := range rs {
		if i == limit {
			break
		}
		out = append(out, r.Seed)
	}
	return out
}

func (s *Stats) add(o Stats) {
	s.Messages += o.Messages
	s.Deliveries += o.Deliveries
	s.Crashes += o.Crashes
	s.ClockJumps += o.ClockJumps
	s.Outages += o.Outages
	s.Pauses += o.Pauses
	s.Replays += o.Replays
	s.Residual += o.Residual
	if s.Outcomes == nil {
		s.Outcomes = map[engine.Result]int{}
	}
	for k, v := range o.Outcomes {
		s.Outcomes[k] += v
	}
	s.API.Creates += o.API.Creates
	s.API.Updates += o.API.Updates
	s.API.Deletes += o.API.Deletes
	s.API.Lookups += o.API.Lookups
	s.API.Failures += o.API.Failures
	s.API.StaleByZombie += o.API.StaleByZombie
	s.API.OverlapWithZombie += o.API.OverlapWithZombie
	s.API.DuplicatePeak = max(s.API.DuplicatePeak, o.API.DuplicatePeak)
	s.API.Landed += o.API.Landed
}

func fmtStats(s Stats) string {
	var outcomes []string
	for _, k := range sortedKeys(s.Outcomes) {
		outcomes = append(outcomes, fmt.Sprintf("%s=%d", k, s.Outcomes[k]))
	}
	return fmt.Sprintf("%d messages, %d deliveries {%s}, %d crashes, %d clock jumps, %d outages, %d pauses, %d parked events replayed; "+
		"API: %d creates, %d updates, %d deletes, %d lookups, %d injected failures, %d writes landed after their worker crashed, "+
		"%d stale and %d overlapping writes by zombies (repaired), %d unrepairable zombie writes of crashed workers",
		s.Messages, s.Deliveries, strings.Join(outcomes, " "), s.Crashes, s.ClockJumps, s.Outages, s.Pauses, s.Replays,
		s.API.Creates, s.API.Updates, s.API.Deletes, s.API.Lookups, s.API.Failures, s.API.Landed,
		s.API.StaleByZombie, s.API.OverlapWithZombie, s.Residual)
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func envUint(t *testing.T, name string, def uint64) uint64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestReplayIsIdentical runs seeds twice, concurrently with each other,
// and compares their whole traces byte for byte: a seed must replay
// exactly, or a failure could not be reproduced.
func TestReplayIsIdentical(t *testing.T) {
	seeds := []uint64{1, 2, 3, 98, 104, 131, 315, 719}
	for s := uint64(4); len(seeds) < 24; s++ {
		seeds = append(seeds, s*7919)
	}
	type pair struct{ a, b bytes.Buffer }
	runs := make([]pair, len(seeds))
	var wg sync.WaitGroup
	for i, seed := range seeds {
		for _, buf := range []*bytes.Buffer{&runs[i].a, &runs[i].b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				Run(Options{Seed: seed, Full: buf})
			}()
		}
	}
	wg.Wait()
	for i, seed := range seeds {
		a, b := runs[i].a.Bytes(), runs[i].b.Bytes()
		if len(a) == 0 {
			t.Fatalf("seed %d left no trace", seed)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("seed %d replayed differently:\n%s", seed, firstDifference(a, b))
		}
	}
}

func firstDifference(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d:\n  first:  %s\n  second: %s", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("one trace is a prefix of the other (%d and %d lines)", len(la), len(lb))
}
