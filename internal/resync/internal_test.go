package resync

import (
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
)

func TestQuietSince(t *testing.T) {
	t0 := time.Unix(100, 0)
	t1 := t0.Add(2 * time.Second)
	base := observation{beats: map[string]beat{"a": {seen: t0, done: 10}, "b": {seen: t0, done: 5}}}
	cases := []struct {
		name         string
		now          map[string]beat
		quiet, fresh bool
	}{
		{"renewed, nothing settled", map[string]beat{"a": {t1, 10}, "b": {t1, 5}}, true, true},
		{"one heartbeat not yet renewed", map[string]beat{"a": {t1, 10}, "b": {t0, 5}}, true, false},
		{"a worker settled something", map[string]beat{"a": {t1, 11}, "b": {t1, 5}}, false, true},
		{"a worker appeared", map[string]beat{"a": {t1, 10}, "b": {t1, 5}, "c": {t1, 0}}, false, true},
		{"a worker vanished", map[string]beat{"a": {t1, 10}}, false, true},
	}
	for _, c := range cases {
		quiet, fresh := observation{beats: c.now}.quietSince(base)
		if quiet != c.quiet || (quiet && fresh != c.fresh) {
			t.Errorf("%s: quiet=%v fresh=%v, want %v %v", c.name, quiet, fresh, c.quiet, c.fresh)
		}
	}
}

func TestIdle(t *testing.T) {
	cases := []struct {
		o    observation
		want bool
	}{
		{observation{unsettled: -1}, true},
		{observation{unsettled: -1, status: DrainStatus{Ready: 1}}, false},
		{observation{unsettled: -1, status: DrainStatus{Delayed: 2}}, false},
		{observation{unsettled: -1, status: DrainStatus{Delayed: -1}}, true},
		{observation{unsettled: -1, status: DrainStatus{InFlight: 1}}, false},
		{observation{unsettled: 3, status: DrainStatus{Delayed: -1}}, false}, // delayed retries NATS counts as unsettled
		{observation{unsettled: 0, status: DrainStatus{Delayed: -1}}, true},
	}
	for i, c := range cases {
		if got := c.o.idle(); got != c.want {
			t.Errorf("case %d %+v: idle=%v, want %v", i, c.o, got, c.want)
		}
	}
}

func TestFormatLine(t *testing.T) {
	line := FormatLine(Progress{Phase: PhaseSnapshot, Rows: 450000, Total: 1000000, Rate: 51234.5, ETA: 11 * time.Second}, 20)
	for _, want := range []string{"[========>           ]", " 45.0%", "450,000/1,000,000 rows", "51,234 rows/s", "ETA 11s"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if line := FormatLine(Progress{Phase: PhaseSnapshot, ETA: -1}, 10); !strings.Contains(line, "ETA --") || !strings.Contains(line, "0/0 rows") {
		t.Errorf("empty progress line %q", line)
	}
	drain := FormatLine(Progress{Phase: PhaseDrain, Drain: DrainStatus{Ready: 1200, Delayed: -1, InFlight: 3, Consumers: 2}}, 10)
	if drain != "draining resync: 1,200 ready, ? delayed, 3 in flight, 2 consumers" {
		t.Errorf("drain line %q", drain)
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte(`{"run_id":"listing-abc","spec_hash":"00","last_key":"42","rows":42,"total":100,"segments":1,"started":"2026-01-02T15:04:05Z","updated":"2026-01-02T15:04:05Z","done":false}`))
	f.Add([]byte(`{"run_id":"x","spec_hash":"y","rows":-1}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"finished":"not a time"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := ParseCheckpoint("resync/x", b)
		if err != nil {
			if setting.Key(err) != "resync.restart" {
				t.Fatalf("error %q does not name the fix (setting %q)", err, setting.Key(err))
			}
			return
		}
		if cp.RunID == "" || cp.SpecHash == "" || cp.Rows < 0 || cp.Total < 0 {
			t.Fatalf("accepted an inconsistent checkpoint %+v", cp)
		}
	})
}
