// Package throttle drives a third-party API at the highest throughput it
// sustains and never past it, across every worker process. Sink wraps any
// sink.Sink and makes each call wait for, in order:
//
//  1. the cluster-wide hold: a Retry-After seen by any process, or an outage
//     detected by any process, stops every process until it ends;
//  2. a cluster-wide rate token (GCRA through the Limiter port): the
//     configured rate when the API's limit is known, otherwise a rate learned
//     from 429s (see rateController), and none at all until the first 429.
//     Tokens are taken in batches, one round trip for every caller waiting
//     and reserveSpan (20 ms) of demand ahead (see reservation), so a busy
//     process asks the limiter a few dozen times a second, not per call;
//  3. a slot of the per-process adaptive concurrency limit (AIMD on 503s,
//     timeouts, connection errors and latency blow-ups, see concurrency),
//     capped by MaxInFlight or else by the callers' own concurrency.
//
// Live calls keep a share of the budget while resync calls run: set the
// priority on the context with WithPriority. During an outage only the
// holder of a short probe lease sends calls; everyone else waits.
//
// Every outcome is judged by sink.Classify, the judgement the engine shares.
// When the limiter itself fails (its store is unreachable), the call is not
// sent and its error wraps sink.ErrLocal: that is this side failing, not the
// API, so it counts towards no outage, concurrency cut, rate change, breaker
// or attempt; the call is simply tried again later.
//
// Limits. Rates stay within [MinRate, MaxRate] (0.001/s to 10⁶/s), bursts
// within [1, MaxBurst] (10⁶), holds and probe leases within MaxSpan (24h)
// from now: the learned rate stops growing at MaxRate, Config.Validate
// refuses settings outside these, and every Limiter adapter clamps what it
// is given into them the same way, so no input fails a statement, yields a
// negative wait or turns into "no limit".
//
// The Limiter port has adapters on Redis (throttle/redislimit), PostgreSQL
// (throttle/pglimit) and NATS JetStream KV (throttle/natslimit); all pass the
// conformance suite and its fuzz target in throttle/limitertest.
// MemoryLimiter is the single-process adapter.
package throttle

import (
	"context"
	"sync"
	"time"

	"github.com/eventsync/eventsync/bus"
)

// Limiter is the cluster-wide state every process shares, per sink name: a
// GCRA rate limit, a hold ("nobody calls before this time") and a probe
// lease. Adapters judge time by their server's clock where it has one, so
// hold times passed between processes assume clocks in sync (NTP).
type Limiter interface {
	// Take asks for up to n calls at once at rate calls/s with a burst of
	// burst calls (GCRA: the theoretical arrival time advances by 1/rate
	// per call and may run ahead of now by at most burst/rate). It grants
	// as many as n single takes in a row would get, at least 1 unless none
	// is free, and consumes them; one round trip serves a batch. When the
	// name is held or no token is free it returns 0 and how long until one
	// is (> 0); nothing is consumed then. Callers may change rate, burst
	// and n between calls. Any rate, burst and n are accepted and clamped
	// into [MinRate, MaxRate], [1, MaxBurst] and [1, MaxBurst]
	// (EmissionInterval, ClampBurst).
	Take(ctx context.Context, name string, rate float64, burst, n int) (granted int, retryAfter time.Duration, err error)
	// Hold stops Take for name until until, at most MaxSpan from now.
	// Holds only extend: a hold ending earlier than the current one does
	// not shorten it, and one that has ended already sets nothing (but for
	// its rate, while the current hold lasts). rate, when above 0, is the
	// call rate every process resumes at after the hold (the one learned
	// from the 429 that caused it), stored as HoldRate(rate); while a hold
	// is active the lowest rate given wins, so two processes cutting at
	// once agree.
	Hold(ctx context.Context, name string, until time.Time, rate float64) error
	// HeldUntil returns the end of name's hold (the zero time when there is
	// none; it may be in the past) and the rate stored with it (0: none).
	HeldUntil(ctx context.Context, name string) (until time.Time, rate float64, err error)
	// TryProbe takes or renews the probe lease of name for ttl, clamped
	// into [0, MaxSpan]. It reports true when owner holds it afterwards,
	// false while another owner's lease is unexpired. A ttl of 0 or less
	// takes it for no time: it leaves the lease free, which is how its
	// holder gives it up.
	TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
}

// Priority orders calls when the budget is short.
type Priority int

const (
	// Live is the default: application changes, latency matters.
	Live Priority = iota
	// Resync is snapshot traffic: bulk, may wait for live calls.
	Resync
)

func (p Priority) String() string {
	if p == Resync {
		return "resync"
	}
	return "live"
}

type priorityKey struct{}

// WithPriority returns ctx carrying p; Sink reads it on every call.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityFrom returns the priority set by WithPriority; without one, a
// delivery of the resync stream (bus.WithStream, set by the worker engine)
// is Resync, anything else Live.
func PriorityFrom(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok {
		if p == Resync {
			return Resync
		}
		return Live
	}
	if s, ok := bus.StreamFrom(ctx); ok && s == bus.Resync {
		return Resync
	}
	return Live
}

// GCRA is one step of the generic cell rate algorithm for up to n calls,
// for adapters that compute it in Go: given the stored theoretical arrival
// time tat (zero when none), it returns the new tat and how many calls
// conform at now to rate and burst (as many as n single steps in a row
// would grant), or, when none does, the wait until one would. rate, burst
// and n are clamped into the limits first (EmissionInterval, ClampBurst).
// Adapters that run it on a server (Lua, SQL) implement the same
// arithmetic in microseconds.
func GCRA(now, tat time.Time, rate float64, burst, n int) (newTAT time.Time, granted int, retryAfter time.Duration) {
	interval := EmissionInterval(rate)
	if tat.Before(now) {
		tat = now
	}
	// The k-th call conforms while tat + k×interval - burst×interval ≤ now.
	// At most MaxBurst × 1000 s = 10¹⁵ µs ahead: no overflow.
	free := (time.Duration(ClampBurst(burst))*interval - tat.Sub(now)) / interval
	if free < 1 {
		return tat, 0, tat.Add(interval).Add(-time.Duration(ClampBurst(burst)) * interval).Sub(now)
	}
	granted = int(min(free, time.Duration(ClampBurst(n))))
	return tat.Add(time.Duration(granted) * interval), granted, 0
}

// MemoryLimiter is a Limiter inside one process: correct for a single
// worker process (or tests), shares nothing with other processes.
type MemoryLimiter struct {
	mu    sync.Mutex
	now   func() time.Time
	names map[string]*memoryState
}

type memoryState struct {
	tat, heldUntil, probeUntil time.Time
	holdRate                   float64
	probeOwner                 string
}

var _ Limiter = (*MemoryLimiter)(nil)

// NewMemoryLimiter returns an empty in-process limiter; now nil means
// time.Now.
func NewMemoryLimiter(now func() time.Time) *MemoryLimiter {
	if now == nil {
		now = time.Now
	}
	return &MemoryLimiter{now: now, names: make(map[string]*memoryState)}
}

func (m *MemoryLimiter) state(name string) *memoryState {
	st := m.names[name]
	if st == nil {
		st = &memoryState{}
		m.names[name] = st
	}
	return st
}

// Take implements Limiter.
func (m *MemoryLimiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now, st := m.now(), m.state(name)
	if st.heldUntil.After(now) {
		return 0, st.heldUntil.Sub(now), nil
	}
	tat, granted, wait := GCRA(now, st.tat, rate, burst, n)
	st.tat = tat
	return granted, wait, nil
}

// Hold implements Limiter.
func (m *MemoryLimiter) Hold(ctx context.Context, name string, until time.Time, rate float64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	until = ClampHoldEnd(now, until)
	st := m.state(name)
	active := st.heldUntil.After(now)
	if !active && !until.After(now) {
		return nil
	}
	st.holdRate = MergeHoldRate(active, st.holdRate, rate)
	if until.After(st.heldUntil) {
		st.heldUntil = until
	}
	return nil
}

// MergeHoldRate is the rate stored with a hold when a new one arrives:
// the lower of the two while the current hold is active, else the new one
// (HoldRate(given): 0 for none, else clamped into [MinRate, MaxRate]).
// Adapters that compute in Go use it; the others implement the same rule.
func MergeHoldRate(active bool, current, given float64) float64 {
	given = HoldRate(given)
	switch {
	case given == 0:
		if active {
			return current
		}
		return 0
	case active && current > 0:
		return min(current, given)
	default:
		return given
	}
}

// HeldUntil implements Limiter.
func (m *MemoryLimiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if st := m.names[name]; st != nil {
		return st.heldUntil, st.holdRate, nil
	}
	return time.Time{}, 0, nil
}

// TryProbe implements Limiter.
func (m *MemoryLimiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now, st := m.now(), m.state(name)
	if st.probeOwner != owner && st.probeUntil.After(now) {
		return false, nil
	}
	st.probeOwner, st.probeUntil = owner, now.Add(ClampSpan(ttl))
	return true, nil
}
