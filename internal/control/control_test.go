package control

import (
	"testing"

	"github.com/eventsync/eventsync/bus"
)

func TestFillUnacked(t *testing.T) {
	reporting := []WorkerStatus{
		{ID: "a", Unacked: map[bus.Stream]int64{bus.Live: 4, bus.Resync: 1}},
		{ID: "b", Unacked: map[bus.Stream]int64{bus.Live: 2}},
		{ID: "old"}, // an older worker reports nothing
	}
	for _, tc := range []struct {
		name    string
		st      bus.StreamStats
		workers []WorkerStatus
		want    int64
		filled  bool
	}{
		{"the broker's count stands", bus.StreamStats{Stream: bus.Live, Unacked: 9, Consumers: 2}, reporting, 9, false},
		{"the workers' sum", bus.StreamStats{Stream: bus.Live, Unacked: -1, Consumers: 3}, reporting, 6, true},
		{"one worker reports the stream", bus.StreamStats{Stream: bus.Resync, Unacked: -1, Consumers: 2}, reporting, 1, true},
		{"consumers and no report: unknown", bus.StreamStats{Stream: bus.Live, Unacked: -1, Consumers: 1}, []WorkerStatus{{ID: "old"}}, -1, false},
		{"no consumers: nothing unacked", bus.StreamStats{Stream: bus.Live, Unacked: -1}, nil, 0, true},
	} {
		st := tc.st
		if filled := FillUnacked(&st, tc.workers); filled != tc.filled || st.Unacked != tc.want {
			t.Errorf("%s: FillUnacked = %v, unacked %d; want %v, %d", tc.name, filled, st.Unacked, tc.filled, tc.want)
		}
	}
}
