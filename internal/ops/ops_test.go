package ops

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/event"
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
