// Package control defines the control-plane records every eventsync process
// shares through the state store: per-stream pause flags and worker
// heartbeats. Workers read them; `eventsync ctl` and `eventsync resync`
// write them. Going through the store makes pause work across every worker
// process on every machine, whichever bus is in use.
package control

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/store"
)

const (
	pausePrefix  = "pause/"
	workerPrefix = "worker/"
)

// Pause is the record stored while a stream is paused.
type Pause struct {
	Stream bus.Stream `json:"stream"`
	By     string     `json:"by"`
	Reason string     `json:"reason,omitempty"`
	Since  time.Time  `json:"since"`
}

// SetPaused pauses or resumes a stream for every worker.
func SetPaused(ctx context.Context, c store.Control, stream bus.Stream, paused bool, by, reason string) error {
	name := pausePrefix + string(stream)
	if !paused {
		if err := c.DeleteControl(ctx, name); err != nil {
			return fmt.Errorf("resume stream %s: %w", stream, err)
		}
		return nil
	}
	b, err := json.Marshal(Pause{Stream: stream, By: by, Reason: reason, Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := c.SetControl(ctx, name, b, 0); err != nil {
		return fmt.Errorf("pause stream %s: %w", stream, err)
	}
	return nil
}

// Paused returns the pause record of a stream, or nil when it runs.
func Paused(ctx context.Context, c store.Control, stream bus.Stream) (*Pause, error) {
	b, ok, err := c.GetControl(ctx, pausePrefix+string(stream))
	if err != nil {
		return nil, fmt.Errorf("read pause flag of %s: %w", stream, err)
	}
	if !ok {
		return nil, nil
	}
	var p Pause
	if err := json.Unmarshal(b, &p); err != nil {
		// A flag that exists is a pause even if its details are unreadable.
		return &Pause{Stream: stream, Reason: "unreadable pause record"}, nil
	}
	return &p, nil
}

// WorkerStatus is a worker's heartbeat.
type WorkerStatus struct {
	ID          string                 `json:"id"`
	Host        string                 `json:"host"`
	PID         int                    `json:"pid"`
	StartedAt   time.Time              `json:"started_at"`
	SeenAt      time.Time              `json:"seen_at"`
	Concurrency int                    `json:"concurrency"`
	InFlight    map[bus.Stream]int64   `json:"in_flight"`
	Consuming   map[bus.Stream]bool    `json:"consuming"`
	Results     map[string]int64       `json:"results"` // totals by result, all streams
	PerStream   map[bus.Stream]int64   `json:"done"`    // settled deliveries per stream
	Rates       map[bus.Stream]float64 `json:"rates"`   // settled deliveries per second since the previous heartbeat
	Breaker     string                 `json:"breaker"`

	// Unacked counts the deliveries the broker handed this worker and it
	// has not settled, prefetched ones included, where the bus adapter
	// counts them (bus.UnackedCounter; RabbitMQ).
	Unacked map[bus.Stream]int64 `json:"unacked,omitempty"`

	// Throttle is the process's API throttle as this worker sees it; nil
	// when the worker's sink is not throttled.
	Throttle *ThrottleStatus `json:"throttle,omitempty"`
	// Lag is the end-to-end lag (occurred_at to settlement) of this
	// worker's recently applied events, by stream; a stream without any
	// such event in the window is absent.
	Lag map[bus.Stream]Lag `json:"lag,omitempty"`
}

// ThrottleStatus is a worker process's throttle (package throttle):
// processes share the rate and the holds through the state store, each
// has its own concurrency limit.
type ThrottleStatus struct {
	// Rate is the cluster-wide call rate this process allows, calls/s; 0
	// while none is known (no 429 seen and none configured).
	Rate float64 `json:"rate_per_s"`
	// Limit is the process's adaptive concurrency limit.
	Limit int `json:"limit"`
	// InFlight counts the API calls holding a slot, by stream.
	InFlight map[bus.Stream]int64 `json:"in_flight"`
	// HeldUntil is the end of the cluster-wide hold (a Retry-After or an
	// outage) when one is active.
	HeldUntil *time.Time `json:"held_until,omitempty"`
	// Outage is set while the API is judged down: only probes go out.
	Outage bool `json:"outage,omitempty"`
}

// Lag summarises recent end-to-end lags, in seconds.
type Lag struct {
	P50 float64 `json:"p50_s"`
	P99 float64 `json:"p99_s"`
	// Events is how many events the quantiles are computed from.
	Events int `json:"events"`
}

// Heartbeat publishes a worker's status; it disappears after ttl unless renewed.
func Heartbeat(ctx context.Context, c store.Control, s WorkerStatus, ttl time.Duration) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return c.SetControl(ctx, workerPrefix+s.ID, b, ttl)
}

// RemoveHeartbeat deletes a worker's status on clean shutdown.
func RemoveHeartbeat(ctx context.Context, c store.Control, id string) error {
	return c.DeleteControl(ctx, workerPrefix+id)
}

// Workers lists live workers, sorted by id.
func Workers(ctx context.Context, c store.Control) ([]WorkerStatus, error) {
	recs, err := c.ListControl(ctx, workerPrefix)
	if err != nil {
		return nil, fmt.Errorf("list worker heartbeats: %w", err)
	}
	out := make([]WorkerStatus, 0, len(recs))
	for name, b := range recs {
		var s WorkerStatus
		if json.Unmarshal(b, &s) != nil {
			s.ID = strings.TrimPrefix(name, workerPrefix)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// FillUnacked sets st.Unacked, where the broker does not count it (-1),
// to the sum the workers report in their heartbeats, and says whether it
// did. It leaves -1 when the queue has consumers and no worker reports the
// stream (they are no eventsync workers, or older ones).
func FillUnacked(st *bus.StreamStats, workers []WorkerStatus) bool {
	if st.Unacked >= 0 {
		return false
	}
	var sum int64
	reported := false
	for _, w := range workers {
		if n, ok := w.Unacked[st.Stream]; ok {
			sum += n
			reported = true
		}
	}
	if !reported && st.Consumers > 0 {
		return false
	}
	st.Unacked = sum
	return true
}
