package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/memory"
	"github.com/eventsync/eventsync/store/storetest"
)

// The store must start no goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s := memory.New(memory.Config{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func BenchmarkAcquireCommit(b *testing.B) {
	storetest.BenchmarkAcquireCommit(b, memory.New(memory.Config{}))
}

// clock is a manual clock, as the simulation drives one.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Leases expire when the injected clock says so, to the nanosecond, and
// never because wall time passed.
func TestLeaseExpiryFollowsTheClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	s := memory.New(memory.Config{Now: c.Now})
	k := store.Key{Entity: "listing", Key: "1"}
	a, _, err := s.Acquire(ctx, k, "a", 10*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := c.Now().Add(10 * time.Second); !a.Expires.Equal(want) {
		t.Errorf("lease expires %s, want %s", a.Expires, want)
	}
	c.Advance(10*time.Second - time.Nanosecond)
	_, _, err = s.Acquire(ctx, k, "b", time.Minute, 2)
	var locked *store.LockedError
	if !errors.As(err, &locked) || locked.RetryAfter != time.Nanosecond {
		t.Fatalf("Acquire a nanosecond before expiry = %v, want locked for 1ns", err)
	}
	c.Advance(time.Nanosecond)
	b, st, err := s.Acquire(ctx, k, "b", time.Minute, 2)
	if err != nil {
		t.Fatalf("Acquire at expiry: %v", err)
	}
	if st.Intent == nil || st.Intent.Version != 1 || !st.Intent.At.Equal(c.Now().Add(-10*time.Second)) {
		t.Errorf("intent of the expired holder = %+v, want version 1 stamped by the store's clock", st.Intent)
	}
	if _, err := s.Extend(ctx, a, time.Minute); !errors.Is(err, store.ErrFenced) {
		t.Errorf("Extend of the taken-over lease = %v, want ErrFenced", err)
	}
	ext, err := s.Extend(ctx, b, time.Hour)
	if err != nil || !ext.Expires.Equal(c.Now().Add(time.Hour)) {
		t.Errorf("Extend = %+v, %v; want expiry an hour from the clock", ext, err)
	}
}

func TestControlExpiryFollowsTheClock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := newClock()
	s := memory.New(memory.Config{Now: c.Now})
	for name, ttl := range map[string]time.Duration{"hb/a": time.Second, "hb/b": time.Minute, "pause/live": 0} {
		if err := s.SetControl(ctx, name, []byte(name), ttl); err != nil {
			t.Fatal(err)
		}
	}
	c.Advance(time.Second)
	if _, ok, err := s.GetControl(ctx, "hb/a"); err != nil || ok {
		t.Errorf("GetControl at expiry = %v, %v; want absent", ok, err)
	}
	got, err := s.ListControl(ctx, "")
	if err != nil || len(got) != 2 || string(got["hb/b"]) != "hb/b" || string(got["pause/live"]) != "pause/live" {
		t.Errorf("ListControl = %q, %v; want hb/b and pause/live", got, err)
	}
	c.Advance(time.Hour)
	if got, err := s.ListControl(ctx, "hb/"); err != nil || len(got) != 0 {
		t.Errorf("ListControl after an hour = %q, %v; want none", got, err)
	}
}

// Values go in and out as copies: a caller changing its slices afterwards
// changes nothing in the store.
func TestValuesAreCopied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memory.New(memory.Config{})
	k := store.Key{Entity: "listing", Key: "1"}
	l, _, err := s.Acquire(ctx, k, "w", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	event := []byte(`{"v":1}`)
	if err := s.Commit(ctx, l, store.Commit{Version: 1, Event: event}); err != nil {
		t.Fatal(err)
	}
	event[2] = 'X'
	l, st, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	st.LastEvent[2] = 'Y'
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, st, _ = s.Acquire(ctx, k, "w", time.Minute, 0); string(st.LastEvent) != `{"v":1}` {
		t.Errorf("last event %s, want it as committed", st.LastEvent)
	}
	v := []byte("on")
	if err := s.SetControl(ctx, "pause/live", v, 0); err != nil {
		t.Fatal(err)
	}
	v[0] = 'X'
	got, _, _ := s.GetControl(ctx, "pause/live")
	got[1] = 'Y'
	if again, _, _ := s.GetControl(ctx, "pause/live"); string(again) != "on" {
		t.Errorf("control value %q, want on", again)
	}
}

// Scan visits keys in order, so a seeded simulation replays identically.
func TestScanIsOrdered(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memory.New(memory.Config{})
	keys := []string{"m", "a", "z", "b", "k", "c"}
	for _, key := range keys {
		if err := s.MarkRepair(ctx, store.Key{Entity: "listing", Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		var got []string
		if err := s.Scan(ctx, "listing", func(k store.Key, _ store.State) error {
			got = append(got, k.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if want := "[a b c k m z]"; fmt.Sprint(got) != want {
			t.Fatalf("Scan order %v, want %s", got, want)
		}
	}
}

// A callback may call the store: Scan holds no lock while it runs.
func TestScanCallbackMayUseTheStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memory.New(memory.Config{})
	k := store.Key{Entity: "listing", Key: "1"}
	if err := s.MarkRepair(ctx, k); err != nil {
		t.Fatal(err)
	}
	err := s.Scan(ctx, "listing", func(k store.Key, _ store.State) error {
		l, _, err := s.Acquire(ctx, k, "scanner", time.Minute, 0)
		if err != nil {
			return err
		}
		return s.Release(ctx, l)
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := memory.New(memory.Config{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	k := store.Key{Entity: "listing", Key: "1"}
	if _, _, err := s.Acquire(ctx, k, "w", time.Minute, 1); !errors.Is(err, memory.ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
	if err := s.SetControl(ctx, "x", nil, 0); !errors.Is(err, memory.ErrClosed) {
		t.Errorf("SetControl after Close = %v, want ErrClosed", err)
	}
	if err := s.Scan(ctx, "listing", func(store.Key, store.State) error { return nil }); !errors.Is(err, memory.ErrClosed) {
		t.Errorf("Scan after Close = %v, want ErrClosed", err)
	}
}
