package throttle

import (
	"math"
	"sync"
	"time"
)

// Tuning of the rate learner. A 429 is a rate signal, not a concurrency
// signal: calls that are refused by a token bucket come back fast, so
// cutting concurrency on them (as Vector's limiter does) oscillates far
// below the limit. Instead every process keeps a rate for the whole cluster
// and passes it to the shared GCRA:
//
//   - Unbound start: no rate at all until the first congestion (see
//     rateController), so an API without a limit costs nothing to learn.
//   - Slow start: from the throughput the API served over the second
//     before the first congestion (or from a configured initial rate), the
//     rate doubles every second while it is the bottleneck, until the next
//     congestion; then it halves.
//   - Congestion is a 429 seen by this process, or a new hold another
//     process set after its 429. Holds are cluster-wide, so every process
//     cuts at the same moment, and additive-increase/multiplicative-decrease
//     makes their rates converge (the classic AIMD fairness argument).
//   - A cut aims just below the rate the API actually granted since the
//     previous congestion: calls granted divided by the time, including the
//     hold. Between two 429s a token bucket accepts exactly its rate, so this
//     estimate is the API's limit; the learner does not need to know the
//     bucket's size.
//   - Probing up is slow right after a cut (1.5%/s) and doubles its pace every
//     1.5 seconds without congestion, so a limit that doubled is found within
//     about ten seconds, while a steady limit costs one short hold every few
//     seconds.
//   - The rate never leaves [minRate, MaxRate] (or stays below a configured
//     rate, however low): without a 429, a rate that is binding for long
//     grows up to MaxRate and stops there, so the bursts derived from it
//     stay within what every Limiter adapter accepts.
//   - Except while live and resync calls share the budget: every probe that
//     finds the limit ends in a 429 whose Retry-After holds live calls too,
//     so once the rate is back at the estimate it creeps up by 0.05%/s
//     (a probe every minute or two instead of every few seconds). Live
//     latency is worth more than finding a raised limit within seconds.
const (
	probeBase        = 0.015 // growth per second right after a cut
	probeDoubling    = 1.5   // seconds for the growth pace to double
	estimateMargin   = 0.95  // target below the estimated limit
	cutCeiling       = 0.9   // a cut lowers the rate by at least this factor
	blindCut         = 0.7   // cut when the cycle was too short to estimate
	minEstimateSpan  = 1500 * time.Millisecond
	rateStep         = 50 * time.Millisecond
	congestionMargin = 200 * time.Millisecond
	minRate          = 0.1             // no cut goes lower (a lower configured rate is kept)
	firstRate        = 50              // slow start after an unbound start begins at least here
	gentleProbe      = 0.0005          // growth per second above the estimate while live and resync mix
	mixedWindow      = 2 * time.Second // a priority counts as active this long after its last call
)

// servedBuckets split the last second of served calls into tenths.
const servedBuckets = 10

// rateController learns (or, with a configured rate, enforces and lowers
// after 429s) the cluster-wide call rate. All methods take the time so tests
// can drive it with a fake clock.
//
// Learning starts unbound (unless Config.InitialRate is set): while no 429
// has been seen and the cluster has learned no limit, there is no rate at
// all, the shared GCRA is asked at MaxRate only so that holds are seen, and
// the controller counts the calls the API served. The first congestion
// starts slow start from the throughput actually achieved over the last
// second (or from the rate another process published with its hold); a
// rate the cluster learned before (stored with an ended hold) is taken as
// the starting estimate instead.
type rateController struct {
	ceiling float64 // configured rate, or MaxRate when learning
	floor   float64 // minRate, or the configured rate when lower

	mu          sync.Mutex
	unbound     bool // learning, no limit known yet: rate is MaxRate and does not move
	served      [servedBuckets]struct{ tenth, n int64 }
	rate        float64
	slowStart   bool
	lastStep    time.Time
	binding     bool      // the GCRA refused a take since lastStep
	cycleStart  time.Time // end of the last congestion's hold
	granted     float64   // calls the rate allowed while binding this cycle
	bindingTime time.Duration
	ignoreUntil time.Time
	cuts        int
	probeTime   time.Duration // binding time spent probing at the normal pace this cycle
	gentleFrom  float64       // the last cut's estimate of the limit (0: none); above it, probe gently while traffic is mixed
	lastCall    [2]time.Time
}

func newRateController(cfg Config, now time.Time) *rateController {
	r := &rateController{ceiling: MaxRate, rate: ClampRate(cfg.InitialRate), slowStart: true, lastStep: now, cycleStart: now}
	switch {
	case cfg.Rate > 0:
		r.ceiling, r.rate, r.slowStart = ClampRate(cfg.Rate), ClampRate(cfg.Rate), false
	case cfg.InitialRate == 0:
		r.unbound, r.rate = true, MaxRate
	}
	r.floor = min(minRate, r.ceiling)
	return r
}

// Allowed returns the rate for status and metrics (0 while unbound) and
// the number of cuts so far.
func (r *rateController) Allowed() (rate float64, cuts int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unbound {
		return 0, r.cuts
	}
	return r.rate, r.cuts
}

// Served records a call the API served (not refused), for the throughput
// slow start begins from.
func (r *rateController) Served(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.unbound {
		return
	}
	tenth := now.UnixNano() / int64(time.Second/servedBuckets)
	b := &r.served[tenth%servedBuckets]
	if b.tenth != tenth {
		b.tenth, b.n = tenth, 0
	}
	b.n++
}

// achieved is the calls served in the last second, per second.
func (r *rateController) achieved(now time.Time) float64 {
	tenth := now.UnixNano() / int64(time.Second/servedBuckets)
	var n int64
	for _, b := range r.served {
		if b.tenth > tenth-servedBuckets && b.tenth <= tenth {
			n += b.n
		}
	}
	return float64(n)
}

// bind ends the unbound start at rate, in slow start or not, and opens a
// new cycle at from. Callers hold mu.
func (r *rateController) bind(rate float64, slowStart bool, from time.Time) {
	r.unbound, r.slowStart, r.gentleFrom = false, slowStart, 0
	r.rate = r.bound(rate)
	r.newCycle(from)
}

// newCycle starts measuring what the API grants from from (the end of a
// congestion's hold) on. Callers hold mu.
func (r *rateController) newCycle(from time.Time) {
	r.cycleStart, r.lastStep = from, from
	r.granted, r.bindingTime, r.binding, r.probeTime = 0, 0, false, 0
}

// Known starts from a limit the cluster learned before (the rate stored
// with a hold that has ended): while unbound, it is taken as an estimate
// and probed above at the normal pace.
func (r *rateController) Known(now time.Time, rate float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unbound && rate > 0 {
		r.bind(rate, false, now)
	}
}

// bound returns x within [floor, ceiling]; NaN is the floor.
func (r *rateController) bound(x float64) float64 {
	if math.IsNaN(x) {
		return r.floor
	}
	return max(r.floor, min(r.ceiling, x))
}

// Rate returns the rate to pass to the limiter now.
func (r *rateController) Rate(now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	return r.rate
}

// Called records a call of priority p, so the controller knows whether
// live and resync calls share the budget.
func (r *rateController) Called(p Priority, now time.Time) {
	r.mu.Lock()
	r.lastCall[p] = now
	r.mu.Unlock()
}

// Mixed reports whether live and resync calls both went out lately.
func (r *rateController) Mixed(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mixed(now)
}

func (r *rateController) mixed(now time.Time) bool {
	return now.Sub(r.lastCall[Live]) < mixedWindow && now.Sub(r.lastCall[Resync]) < mixedWindow
}

// Refused records that the shared GCRA refused a take: the rate is what
// limits throughput right now, so it may grow.
func (r *rateController) Refused(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	r.binding = true
}

// advance integrates the granted calls and grows the rate while it binds.
func (r *rateController) advance(now time.Time) {
	if r.unbound {
		return
	}
	dt := now.Sub(r.lastStep)
	if dt < rateStep {
		return
	}
	r.lastStep = now
	if !r.binding || now.Before(r.cycleStart) {
		return
	}
	r.binding = false
	// A refusal vouches for the rate binding a short while only, not
	// for a quiet gap after it.
	dt = min(dt, 4*rateStep)
	r.bindingTime += dt
	r.granted += r.rate * dt.Seconds()
	mixed := r.mixed(now)
	var growth float64
	switch {
	case r.slowStart:
		growth = math.Ln2 * dt.Seconds()
	case mixed && r.gentleFrom > 0 && r.rate >= r.gentleFrom:
		growth = gentleProbe * dt.Seconds()
	default:
		// The pace doubles with the time spent probing this cycle, not
		// with wall time: after a quiet minute it must not leap. It never
		// outpaces slow start.
		r.probeTime += dt
		pace := min(math.Ln2, probeBase*math.Exp2(r.probeTime.Seconds()/probeDoubling))
		growth = pace * dt.Seconds()
	}
	next := r.rate * math.Exp(growth)
	if mixed && r.gentleFrom > 0 && r.rate < r.gentleFrom {
		next = min(next, r.gentleFrom) // from there on, gently
	}
	r.rate = min(r.ceiling, next)
}

// Congested records a 429 seen by this process, whose hold ends at
// holdEnd, and returns the rate to publish with the hold. One congestion
// episode cuts once.
func (r *rateController) Congested(now, holdEnd time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(now)
	if now.Before(r.ignoreUntil) {
		return r.rate
	}
	if holdEnd.Before(now) {
		holdEnd = now
	}
	if r.unbound {
		// Slow start from what the API served over the last second: a
		// lower bound of its limit once the burst is spent (for one
		// process of many, of its share), doubled each second from here;
		// from firstRate at least, for a process that served little yet.
		r.bind(max(r.achieved(now), firstRate), true, holdEnd)
		r.cuts++
		r.ignoreUntil = holdEnd.Add(congestionMargin)
		return r.rate
	}
	span := r.bindingTime + holdEnd.Sub(now)
	// Gentle probing needs an estimate to stand on: after a halving or a
	// blind cut the rate may sit far below the limit.
	r.gentleFrom = 0
	switch {
	case r.slowStart:
		r.rate /= 2
		r.slowStart = false
	case r.bindingTime >= minEstimateSpan:
		estimate := r.granted / span.Seconds()
		r.rate = min(estimateMargin*estimate, cutCeiling*r.rate)
		r.gentleFrom = min(r.ceiling, estimate)
	default:
		r.rate *= blindCut
	}
	r.rate = r.bound(r.rate)
	r.cuts++
	r.newCycle(holdEnd)
	r.ignoreUntil = holdEnd.Add(congestionMargin)
	return r.rate
}

// Adopt takes over the rate another process published with its hold, so
// every process resumes at the same rate and grows in step; without one
// (rate 0) it cuts as if it had seen the 429 itself.
func (r *rateController) Adopt(now, holdEnd time.Time, rate float64) {
	if !(rate > 0) { // none, or NaN
		r.Congested(now, holdEnd)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.unbound:
		// The publisher was unbound too, most likely: its rate is what it
		// achieved, a start for slow start rather than an estimate.
		r.bind(rate, true, holdEnd)
	default:
		r.advance(now)
		episode := now.Before(r.ignoreUntil) // the congestion this process is in already
		if episode && rate >= r.rate {
			return
		}
		r.rate = r.bound(rate)
		r.gentleFrom = 0
		if !r.slowStart { // the publisher was past slow start too, so its cut was most likely an estimate
			r.gentleFrom = r.rate / estimateMargin
		}
		// A lower rate of the same episode (another process's first
		// contact) leaves a slow start begun in it running.
		if !episode {
			r.slowStart = false
		}
		r.newCycle(holdEnd)
	}
	r.cuts++
	r.ignoreUntil = holdEnd.Add(congestionMargin)
}
