package ops

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/resync"
)

func TestCheckEventRefusesWithTheValidatorsMessage(t *testing.T) {
	o := &Ops{MaxEventBytes: 200, Entities: []string{"listing"}}
	good := `{"id":"1","entity":"listing","key":"k","version":2,"op":"upsert","data":{"name":"x"}}`
	if _, err := o.CheckEvent([]byte(good)); err != nil {
		t.Fatalf("valid event refused: %v", err)
	}
	for body, want := range map[string]string{
		`{"id":"1","entity":"listing","key":"k","version":"2","op":"upsert","data":{}}`: `"version"`,
		`not json`: "invalid event",
		`{"id":"1","entity":"host","key":"k","version":2,"op":"upsert","data":{}}`:                                          "not configured in the sink",
		`{"id":"1","entity":"listing","key":"k","version":2,"op":"upsert","data":{"b":"` + strings.Repeat("x", 300) + `"}}`: "200",
	} {
		_, err := o.CheckEvent([]byte(body))
		var inv *InvalidEventError
		if !errors.As(err, &inv) || !errors.Is(err, event.ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckEvent(%.60s) = %v, want an *InvalidEventError matching event.ErrInvalid that mentions %q", body, err, want)
		}
	}
}

func TestRunOf(t *testing.T) {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cp := resync.Checkpoint{RunID: "r", Rows: 500, Total: 2000, Started: start, Updated: start.Add(10 * time.Second)}
	r := runOf(cp, start.Add(11*time.Second))
	if r.State != "running" || r.Percent != 25 || r.Rate != 50 || r.ETASeconds != 30 {
		t.Errorf("running run: %+v", r)
	}
	if r := runOf(cp, start.Add(5*time.Minute)); r.State != "stalled" {
		t.Errorf("run not updated for minutes reads %q", r.State)
	}
	fin := start.Add(40 * time.Second)
	cp.Rows, cp.Done, cp.Finished = 2000, true, &fin
	if r := runOf(cp, start.Add(time.Hour)); r.State != "done" || r.ETASeconds != -1 || r.Rate != 50 || r.Percent != 100 {
		t.Errorf("done run: %+v", r)
	}
}

func TestStatusFoldsTheWorkersLagAndThrottle(t *testing.T) {
	held := time.Date(2026, 1, 1, 12, 0, 30, 0, time.UTC)
	later := held.Add(time.Minute)
	// Two workers of one process share its throttle; a third runs alone.
	shared := &control.ThrottleStatus{Rate: 40, Limit: 10, InFlight: map[bus.Stream]int64{bus.Live: 3, bus.Resync: 4}, HeldUntil: &held}
	workers := []control.WorkerStatus{
		{ID: "a", Host: "h1", PID: 1, Breaker: "closed", Throttle: shared, InFlight: map[bus.Stream]int64{bus.Live: 2},
			Lag: map[bus.Stream]control.Lag{bus.Live: {P50: 0.2, P99: 3, Events: 100}}},
		{ID: "b", Host: "h1", PID: 1, Breaker: "half-open", Throttle: shared, InFlight: map[bus.Stream]int64{bus.Live: 1},
			Lag: map[bus.Stream]control.Lag{bus.Live: {P50: 0.5, P99: 1, Events: 20}}},
		{ID: "c", Host: "h2", PID: 1, Breaker: "closed", InFlight: map[bus.Stream]int64{bus.Live: 4},
			Throttle: &control.ThrottleStatus{Rate: 35, Limit: 6, InFlight: map[bus.Stream]int64{bus.Live: 2}, HeldUntil: &later, Outage: true}},
		{ID: "old", Host: "h3", PID: 9}, // an older worker reports neither
	}
	live := StreamStatus{Stream: bus.Live}
	fold(&live, workers)
	if live.InFlight != 7 || live.APIInFlight != 5 || live.Lag == nil || *live.Lag != (control.Lag{P50: 0.5, P99: 3, Events: 120}) {
		t.Errorf("live: in flight %d, API in flight %d, lag %+v", live.InFlight, live.APIInFlight, live.Lag)
	}
	resync := StreamStatus{Stream: bus.Resync}
	fold(&resync, workers)
	if resync.APIInFlight != 4 || resync.Lag != nil {
		t.Errorf("resync: API in flight %d, lag %+v", resync.APIInFlight, resync.Lag)
	}
	a := apiOf(workers)
	if a.Breaker != "half-open" || !a.Throttled || a.Rate != 40 || a.Limit != 16 || a.InFlight != 9 ||
		a.HeldUntil == nil || !a.HeldUntil.Equal(later) || !a.Outage {
		t.Errorf("API: %+v", a)
	}
	if a := apiOf(workers[3:]); a.Throttled || a.Breaker != "" || a.HeldUntil != nil {
		t.Errorf("API without throttled workers: %+v", a)
	}
}
