package throttle

import (
	"context"
	"math"
	"sync"
	"time"
)

// signal is what one finished call tells the concurrency limiter.
type signal int

const (
	signalOK       signal = iota // latency sample, may grow the limit
	signalNeutral                // says nothing about capacity (429, 4xx, 500, cancelled)
	signalOverload               // 502/503/504, 408, timeouts, connection errors: cut
)

// slowStartGrowth is what each busy success adds to the limit in slow
// start: the limit grows by a quarter per round trip. Doubling (TCP's one
// per success) overshoots an API's concurrency ceiling by up to the whole
// ceiling in the round trip that crosses it, and every call beyond it
// fails at once (in the throughput scenario, 90 of 132 refusals came from
// the first second); a quarter overshoots by at most a quarter, and still
// reaches 1,000 from 8 in about 22 round trips.
const slowStartGrowth = 0.25

// liveWindow is how long after a live call resync stays capped, so live
// events arriving one by one still find free slots.
const liveWindow = time.Second

// concurrency is the per-process adaptive concurrency limit (AIMD with a
// latency check, after Netflix's concurrency-limits): it grows by one per
// call in slow start and by 1/limit per call afterwards while calls are
// queueing and latency stays healthy, and it is multiplied by backoff (by
// one half at the end of slow start) on overload: 503s, timeouts, connection errors, or a short-term average
// latency above tolerance times the long-term one. Cuts happen at most once
// per cooldown, because every call in flight when the API overloads fails
// together and one overload deserves one cut.
//
// It also orders waiters: live before resync, and while live calls are
// active resync may hold at most (1-share) of the slots.
type concurrency struct {
	backoff, tolerance, share float64
	maxLimit                  float64
	// atCap is called once, the first time a call waits for a slot
	// because the limit stands at a configured maximum (callers want more
	// calls at once than it allows).
	atCap  func(max int)
	capped bool // the maximum is configured, not the callers' own concurrency
	warned bool

	mu        sync.Mutex
	limit     float64
	slowStart bool
	inFlight  [2]int
	waiters   [2][]*slotWaiter
	lastLive  time.Time
	lastCut   time.Time
	short     float64 // EWMA latency over ~10 calls, seconds
	long      float64 // EWMA latency over ~200 calls, seconds
	samples   int
}

type slotWaiter struct {
	ready   chan struct{}
	granted bool
}

// newConcurrency returns the limit for cfg. Without a configured maximum
// the limit has none of its own: it grows only while every slot is taken,
// so it stops one above the most calls the callers make at once.
func newConcurrency(cfg Config) *concurrency {
	c := &concurrency{
		backoff: cfg.Backoff, tolerance: cfg.LatencyTolerance, share: cfg.LiveShare,
		maxLimit: math.MaxInt32, limit: float64(cfg.InitialLimit), slowStart: true,
	}
	if cfg.MaxInFlight > 0 {
		c.maxLimit, c.capped = float64(cfg.MaxInFlight), true
	}
	return c
}

// Limit returns the current limit (whole slots).
func (c *concurrency) Limit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots()
}

// InFlight returns the calls holding a slot, by priority.
func (c *concurrency) InFlight() [2]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}

func (c *concurrency) slots() int { return max(1, int(c.limit)) }

// latency is the long-term average latency of successful calls (0 before
// the first).
func (c *concurrency) latency() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.long * float64(time.Second))
}

func (c *concurrency) liveActive(now time.Time) bool {
	return len(c.waiters[Live]) > 0 || c.inFlight[Live] > 0 || now.Sub(c.lastLive) < liveWindow
}

func (c *concurrency) canGrant(p Priority, now time.Time) bool {
	if c.inFlight[Live]+c.inFlight[Resync] >= c.slots() {
		return false
	}
	if p == Resync && c.liveActive(now) {
		return c.inFlight[Resync] < max(1, int(math.Floor(float64(c.slots())*(1-c.share))))
	}
	return true
}

// acquire waits for a slot; a cancelled wait returns ctx.Err() and holds
// no slot.
func (c *concurrency) acquire(ctx context.Context, p Priority, now time.Time) error {
	c.mu.Lock()
	if p == Live {
		c.lastLive = now
	}
	if len(c.waiters[Live]) == 0 && (p == Live || len(c.waiters[Resync]) == 0) && c.canGrant(p, now) {
		c.inFlight[p]++
		c.mu.Unlock()
		return nil
	}
	w := &slotWaiter{ready: make(chan struct{})}
	c.waiters[p] = append(c.waiters[p], w)
	warn := c.capped && !c.warned && c.limit >= c.maxLimit && c.inFlight[Live]+c.inFlight[Resync] >= c.slots()
	if warn {
		c.warned = true
	}
	c.mu.Unlock()
	if warn && c.atCap != nil {
		c.atCap(int(c.maxLimit))
	}

	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if w.granted {
			c.inFlight[p]--
			c.dispatch(now)
		} else {
			for i, x := range c.waiters[p] {
				if x == w {
					c.waiters[p] = append(c.waiters[p][:i], c.waiters[p][i+1:]...)
					break
				}
			}
		}
		return ctx.Err()
	}
}

// dispatch hands free slots to waiters, live first. Callers hold mu.
func (c *concurrency) dispatch(now time.Time) {
	for {
		var p Priority
		switch {
		case len(c.waiters[Live]) > 0 && c.canGrant(Live, now):
			p = Live
		case len(c.waiters[Resync]) > 0 && c.canGrant(Resync, now):
			p = Resync
		default:
			return
		}
		w := c.waiters[p][0]
		c.waiters[p] = c.waiters[p][1:]
		w.granted = true
		c.inFlight[p]++
		close(w.ready)
	}
}

// release frees a slot and feeds the call's outcome to the limit.
func (c *concurrency) release(p Priority, now time.Time, latency time.Duration, s signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	busy := c.inFlight[Live]+c.inFlight[Resync] >= c.slots() || len(c.waiters[Live])+len(c.waiters[Resync]) > 0
	c.inFlight[p]--
	switch s {
	case signalOverload:
		c.cut(now)
	case signalOK:
		rtt := latency.Seconds()
		if c.samples == 0 {
			c.short, c.long = rtt, rtt
		}
		c.samples++
		c.short += (rtt - c.short) * 0.1
		c.long += (rtt - c.long) * 0.005
		switch {
		case c.samples >= 50 && c.short > c.tolerance*c.long:
			if c.cut(now) {
				c.short = c.long // judge the next cut on fresh samples
			}
		case busy && c.slowStart:
			c.limit = min(c.maxLimit, c.limit+slowStartGrowth)
		case busy:
			c.limit = min(c.maxLimit, c.limit+1/c.limit)
		}
	}
	c.dispatch(now)
}

// cut multiplies the limit by backoff unless it was cut within the
// cooldown; it reports whether it cut.
func (c *concurrency) cut(now time.Time) bool {
	cooldown := max(100*time.Millisecond, time.Duration(2*c.short*float64(time.Second)))
	if now.Sub(c.lastCut) < cooldown {
		return false
	}
	c.lastCut = now
	factor := c.backoff
	if c.slowStart {
		// Slow start doubles the limit every round trip, so the first
		// overload finds it up to twice what the API takes (as TCP's
		// does): halve it, or a fleet of processes stays above a
		// concurrency ceiling for many cooldowns.
		factor = min(factor, 0.5)
	}
	c.slowStart = false
	c.limit = max(1, c.limit*factor)
	return true
}
