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
		var ok bool
		tat, ok, _ = throttle.GCRA(now, tat, 10, 4)
		if !ok {
			t.Fatalf("call %d of a burst of 4 refused", i+1)
		}
	}
	_, ok, wait := throttle.GCRA(now, tat, 10, 4)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("5th call: ok=%v wait=%v; want refused for 100ms", ok, wait)
	}
	if _, ok, _ = throttle.GCRA(now.Add(100*time.Millisecond), tat, 10, 4); !ok {
		t.Fatal("call after one emission interval refused")
	}
	// An idle past never lets more than burst through at once.
	tat, _, _ = throttle.GCRA(now.Add(time.Hour), tat, 10, 4)
	if want := now.Add(time.Hour + 100*time.Millisecond); !tat.Equal(want) {
		t.Fatalf("tat after idling = %v, want %v", tat, want)
	}
}
