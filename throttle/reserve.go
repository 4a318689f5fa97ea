package throttle

import (
	"context"
	"math"
	"sync"
	"time"
)

// reserveSpan is how much of this process's demand one limiter round trip
// takes ahead, and how long tokens taken ahead stay usable: tens of
// milliseconds' worth, so a busy process asks the limiter a few dozen
// times a second instead of once per call, while a hold another process
// sets still stops it within about that long (its next round trip sees
// the hold). Tokens that lapse unused were never sent, so the cluster
// stays within its rate; they only lower what it achieves, a little.
const reserveSpan = 20 * time.Millisecond

// maxReserve caps one batch while no rate is known (the burst at MaxRate
// would be tens of thousands).
const maxReserve = 1000

// demandWindow is how often the demand estimate is refreshed.
const demandWindow = 100 * time.Millisecond

// reservation is one priority's rate tokens in this process: those taken
// ahead (stock) and the callers waiting for one (queue). One waiting
// caller at a time, the leader, takes a batch from the limiter for all of
// them, so callers of one priority cost one round trip per batch, not one
// each. It starts no goroutine: the leader is a caller, and hands the role
// on when it is served or gives up.
type reservation struct {
	mu      sync.Mutex
	stock   int       // tokens taken ahead, not yet used
	expires time.Time // when the stock lapses
	queue   []*tokenWaiter
	leader  *tokenWaiter // nil: nobody is taking for the queue
	handed  int          // tokens handed out since since
	since   time.Time
	demand  float64 // tokens handed out per second, lately
}

type tokenWaiter struct {
	wake chan struct{} // buffered: served, held, or made leader
	done bool
	held bool  // a hold started: wait for it, then ask again
	err  error // the leader's round trip failed
}

// signal wakes w; a wake already pending is enough.
func (w *tokenWaiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// use hands out a token from the stock if one is left and still valid.
func (r *reservation) use(now time.Time) bool {
	if r.stock > 0 && now.Before(r.expires) {
		r.stock--
		r.handed++
		return true
	}
	r.stock = 0
	return false
}

// want is how many tokens the leader asks for: one per waiting caller and
// reserveSpan's worth of recent demand, at most most.
func (r *reservation) want(now time.Time, most int) int {
	if el := now.Sub(r.since); el >= demandWindow {
		r.demand = float64(r.handed) / el.Seconds()
		r.handed, r.since = 0, now
	}
	ahead := int(math.Ceil(r.demand * reserveSpan.Seconds()))
	return max(1, min(most, len(r.queue)+ahead))
}

// grant hands n tokens to the queue in order and keeps the rest as stock.
func (r *reservation) grant(now time.Time, n int) {
	served := min(n, len(r.queue))
	for _, w := range r.queue[:served] {
		w.done = true
		w.signal()
	}
	r.queue = r.queue[served:]
	r.handed += served
	if rest := n - served; rest > 0 {
		r.stock, r.expires = rest, now.Add(reserveSpan)
	}
}

// release ends every wait with held set and drops the stock: a hold
// started, and tokens taken before it must not go out when it ends.
func (r *reservation) release() {
	for _, w := range r.queue {
		w.done, w.held = true, true
		w.signal()
	}
	r.queue, r.leader, r.stock = nil, nil, 0
}

// fail ends w's wait with err.
func (r *reservation) fail(w *tokenWaiter, err error) {
	r.remove(w)
	w.done, w.err = true, err
}

func (r *reservation) remove(w *tokenWaiter) {
	for i, x := range r.queue {
		if x == w {
			r.queue = append(r.queue[:i], r.queue[i+1:]...)
			return
		}
	}
}

// handOff makes the first waiter, if any, the leader.
func (r *reservation) handOff() {
	r.leader = nil
	if len(r.queue) > 0 {
		r.leader = r.queue[0]
		r.leader.signal()
	}
}

// dropReserved forgets the tokens taken ahead, for a hold that started.
func (s *Sink) dropReserved() {
	for p := range s.res {
		r := &s.res[p]
		r.mu.Lock()
		r.stock = 0
		r.mu.Unlock()
	}
}

// takeToken waits for a cluster-wide rate token, from the stock or from
// the limiter. held reports that a hold started meanwhile; the caller
// waits for it and tries again.
func (s *Sink) takeToken(ctx context.Context, p Priority) (held bool, err error) {
	r := &s.res[p]
	r.mu.Lock()
	if r.use(s.now()) {
		r.mu.Unlock()
		return false, nil
	}
	w := &tokenWaiter{wake: make(chan struct{}, 1)}
	r.queue = append(r.queue, w)
	lead := r.leader == nil
	if lead {
		r.leader = w
	}
	r.mu.Unlock()
	for {
		if lead {
			s.lead(ctx, p, r, w)
		} else {
			select {
			case <-w.wake:
			case <-ctx.Done():
			}
		}
		r.mu.Lock()
		switch {
		case w.done:
			r.mu.Unlock()
			return w.held, w.err
		case ctx.Err() != nil:
			r.remove(w)
			if r.leader == w {
				r.handOff()
			}
			r.mu.Unlock()
			return false, ctx.Err()
		}
		lead = r.leader == w
		r.mu.Unlock()
	}
}

// lead takes batches from the limiter for the queue until w is served,
// fails or its context ends, then hands the role on.
func (s *Sink) lead(ctx context.Context, p Priority, r *reservation, w *tokenWaiter) {
	for {
		now := s.now()
		rate := s.rate.Rate(now)
		// Live's extra burst lets it pass a saturating resync; with no
		// resync it would only make the calls bunch up.
		bp := p
		if !s.rate.Mixed(now) {
			bp = Resync
		}
		burst := s.cfg.burstFor(rate, bp)
		// At most reserveSpan of the cluster's rate per round trip, so
		// one process's batch never takes the whole burst.
		most := max(1, min(maxReserve, burst, int(math.Ceil(rate*reserveSpan.Seconds()))))
		r.mu.Lock()
		waiting := len(r.queue)
		n := r.want(now, most)
		r.mu.Unlock()

		granted, wait, err := s.lim.Take(ctx, s.name, rate, burst, n)
		now = s.now()
		r.mu.Lock()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			} else {
				err = s.localError("take a rate token", err)
			}
			r.fail(w, err) // the others wait for the next leader
			r.handOff()
			r.mu.Unlock()
			return
		}
		r.grant(now, granted)
		if w.done {
			r.handOff()
		}
		served := w.done
		r.mu.Unlock()
		if granted > 0 && granted < waiting {
			s.rate.Refused(now) // callers are left waiting: the rate binds
		}
		if served {
			return
		}
		if granted > 0 {
			continue
		}
		interval := EmissionInterval(rate)
		if wait <= 0 { // a refusal without a wait: a limiter's bug must not spin
			wait = interval
		}
		binding := true
		if wait > 50*time.Millisecond && wait > 20*interval {
			until, err := s.holdEnd(ctx, true)
			if until.After(now) {
				r.mu.Lock()
				r.release()
				r.mu.Unlock()
				return
			}
			// A long refusal the hold cannot explain may still be one:
			// only a limiter that answers counts as the rate binding.
			binding = err == nil
		}
		if binding {
			s.rate.Refused(now)
			// Wait for a batch rather than a single token, at most
			// reserveSpan longer.
			wait += min(time.Duration(min(waiting, most)-1)*interval, reserveSpan)
		}
		if err := sleep(ctx, wait); err != nil {
			r.mu.Lock()
			r.fail(w, err)
			r.handOff()
			r.mu.Unlock()
			return
		}
	}
}
