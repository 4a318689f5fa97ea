package engine

import (
	"slices"
	"sync"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/control"
)

// Heartbeat lag quantiles are computed from each stream's last
// lagRingSize applied events within lagWindow: bounded memory, and a
// quiet stream's old lags age out.
const (
	lagRingSize = 512
	lagWindow   = time.Minute
)

// lagRing keeps the end-to-end lags of a stream's most recent applied
// events in a fixed-size ring.
type lagRing struct {
	at   [lagRingSize]time.Time
	lag  [lagRingSize]float64
	next int
	n    int
}

// lags are a worker's recent lags per stream, for its heartbeat. The zero
// value is ready to use; safe for concurrent use.
type lags struct {
	mu    sync.Mutex
	rings map[bus.Stream]*lagRing
}

// add records one applied event's lag in seconds.
func (l *lags) add(s bus.Stream, at time.Time, lag float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rings[s]
	if r == nil {
		if l.rings == nil {
			l.rings = map[bus.Stream]*lagRing{}
		}
		r = &lagRing{}
		l.rings[s] = r
	}
	r.at[r.next], r.lag[r.next] = at, lag
	r.next = (r.next + 1) % lagRingSize
	r.n = min(r.n+1, lagRingSize)
}

// snapshot returns p50 and p99 (nearest rank) per stream of the lags
// recorded within lagWindow before now; nil when there are none.
func (l *lags) snapshot(now time.Time) map[bus.Stream]control.Lag {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out map[bus.Stream]control.Lag
	vals := make([]float64, 0, lagRingSize)
	for s, r := range l.rings {
		vals = vals[:0]
		for i := range r.n {
			if now.Sub(r.at[i]) <= lagWindow {
				vals = append(vals, r.lag[i])
			}
		}
		if len(vals) == 0 {
			continue
		}
		slices.Sort(vals)
		if out == nil {
			out = map[bus.Stream]control.Lag{}
		}
		out[s] = control.Lag{P50: rank(vals, 0.50), P99: rank(vals, 0.99), Events: len(vals)}
	}
	return out
}

// rank is the nearest-rank q-quantile of sorted vals (not empty).
func rank(vals []float64, q float64) float64 {
	i := int(q*float64(len(vals))+0.9999999) - 1
	return vals[max(0, min(i, len(vals)-1))]
}
