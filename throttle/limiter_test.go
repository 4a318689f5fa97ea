package throttle_test

import (
	"testing"
	"time"

	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/limitertest"
)

func TestMemoryLimiterConformance(t *testing.T) {
	l := throttle.NewMemoryLimiter(nil)
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

func FuzzMemoryLimiter(f *testing.F) {
	l := throttle.NewMemoryLimiter(nil)
	limitertest.Fuzz(f, func(*testing.T) throttle.Limiter { return l })
}

func TestGCRA(t *testing.T) {
	now := time.Unix(1000, 0)
	var tat time.Time
	for i := range 4 {
		var n int
		tat, n, _ = throttle.GCRA(now, tat, 10, 4, 1)
		if n != 1 {
			t.Fatalf("call %d of a burst of 4 refused", i+1)
		}
	}
	_, n, wait := throttle.GCRA(now, tat, 10, 4, 1)
	if n != 0 || wait != 100*time.Millisecond {
		t.Fatalf("5th call: granted %d wait=%v; want refused for 100ms", n, wait)
	}
	if _, n, _ = throttle.GCRA(now.Add(100*time.Millisecond), tat, 10, 4, 1); n != 1 {
		t.Fatal("call after one emission interval refused")
	}
	// An idle past never lets more than burst through at once.
	tat, _, _ = throttle.GCRA(now.Add(time.Hour), tat, 10, 4, 1)
	if want := now.Add(time.Hour + 100*time.Millisecond); !tat.Equal(want) {
		t.Fatalf("tat after idling = %v, want %v", tat, want)
	}
}

// A batch gets what single steps in a row would: the whole burst at most,
// then one call per interval; the arrival time moves by what was granted.
func TestGCRABatch(t *testing.T) {
	now := time.Unix(1000, 0)
	tat, n, wait := throttle.GCRA(now, time.Time{}, 10, 4, 6)
	if n != 4 || wait != 0 || !tat.Equal(now.Add(400*time.Millisecond)) {
		t.Fatalf("batch of 6 with burst 4 on an empty state: granted %d, wait %v, tat %v; want 4, no wait, now+400ms", n, wait, tat.Sub(now))
	}
	if _, n, wait = throttle.GCRA(now.Add(50*time.Millisecond), tat, 10, 4, 6); n != 0 || wait != 50*time.Millisecond {
		t.Fatalf("batch half an interval later: granted %d, wait %v; want none for 50ms", n, wait)
	}
	if tat, n, _ = throttle.GCRA(now.Add(250*time.Millisecond), tat, 10, 4, 6); n != 2 || !tat.Equal(now.Add(600*time.Millisecond)) {
		t.Fatalf("batch 2.5 intervals later: granted %d, tat %v; want 2, now+600ms", n, tat.Sub(now))
	}
	if _, n, _ = throttle.GCRA(now, time.Time{}, 10, 4, -3); n != 1 {
		t.Fatalf("batch of -3: granted %d; want 1", n)
	}
}
