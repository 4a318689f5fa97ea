package sim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/engine"
)

func newTestBus() (*Sched, *Bus) {
	s := newTestSched(1)
	return s, NewBus(s, NewTrace(50, nil))
}

// settleIn runs fn on d in a task.
func settleIn(t *testing.T, s *Sched, fn func(ctx context.Context)) {
	t.Helper()
	runTask(t, s, fn)
}

func TestSettleFollowsTheWorker(t *testing.T) {
	for _, tc := range []struct {
		result engine.Result
		state  msgState
	}{
		{engine.ResultApplied, msgAcked},
		{engine.ResultDuplicate, msgAcked},
		{engine.ResultStale, msgAcked},
		{engine.ResultSuperseded, msgAcked},
		{engine.ResultRepaired, msgAcked},
		{engine.ResultRetried, msgDelayed},
		{engine.ResultLocked, msgDelayed},
		{engine.ResultParked, msgParked},
		{engine.ResultReleased, msgReady},
	} {
		t.Run(string(tc.result), func(t *testing.T) {
			s, b := newTestBus()
			m := b.Publish(bus.Live, []byte("x"), nil, "test")
			d := b.Deliver(bus.Live, "w")
			d.RetryIn = time.Second
			settleIn(t, s, func(ctx context.Context) {
				if err := Settle(ctx, d, engine.Outcome{Result: tc.result, Reason: "because"}); err != nil {
					t.Error(err)
				}
			})
			if m.state != tc.state || acked(tc.result) != (tc.state == msgAcked) {
				t.Fatalf("%s left the message %s, want %s", tc.result, m.state, tc.state)
			}
		})
	}
}

func TestRetryComesBackAfterItsDelay(t *testing.T) {
	s, b := newTestBus()
	m := b.Publish(bus.Live, []byte("x"), nil, "")
	d := b.Deliver(bus.Live, "w")
	d.RetryIn = time.Minute
	settleIn(t, s, func(ctx context.Context) {
		if err := d.Retry(ctx, 0, "later"); err != nil {
			t.Error(err)
		}
		if err := d.Ack(ctx); !errors.Is(err, bus.ErrSettled) {
			t.Errorf("ack after retry = %v, want ErrSettled", err)
		}
	})
	if at, ok := b.NextDue(); !ok || at != Epoch.Add(time.Minute) {
		t.Fatalf("due %v %t", at.Sub(Epoch), ok)
	}
	b.Wake()
	if b.CanDeliver(bus.Live) {
		t.Fatal("a retry came back early")
	}
	s.Advance(time.Minute)
	b.Wake()
	if d2 := b.Deliver(bus.Live, "w"); d2.Message() != m || d2.Attempt() != 2 {
		t.Fatalf("redelivered %d at attempt %d", d2.Message().ID, d2.Attempt())
	}
}

func TestSettleFaults(t *testing.T) {
	t.Run("before: nothing happens, the handler hands it back", func(t *testing.T) {
		s, b := newTestBus()
		m := b.Publish(bus.Live, []byte("x"), nil, "")
		d := b.Deliver(bus.Live, "w")
		b.Faults.Before = 1
		settleIn(t, s, func(ctx context.Context) {
			if err := d.Ack(ctx); err == nil {
				t.Error("ack succeeded")
			}
			b.Faults.Before = 0
			if err := d.Release(ctx); err != nil {
				t.Error(err)
			}
		})
		if m.state != msgReady {
			t.Fatalf("message %s", m.state)
		}
	})
	t.Run("after: taken, answer lost", func(t *testing.T) {
		s, b := newTestBus()
		m := b.Publish(bus.Live, []byte("x"), nil, "")
		d := b.Deliver(bus.Live, "w")
		b.Faults.After = 1
		settleIn(t, s, func(ctx context.Context) {
			if err := Settle(ctx, d, engine.Outcome{Result: engine.ResultApplied}); err == nil {
				t.Error("settle succeeded")
			}
		})
		if m.state != msgAcked {
			t.Fatalf("message %s", m.state)
		}
	})
	t.Run("silent: lost on the way, redelivered when the consumer goes", func(t *testing.T) {
		s, b := newTestBus()
		m := b.Publish(bus.Live, []byte("x"), nil, "")
		d := b.Deliver(bus.Live, "w")
		b.Faults.Silent = 1
		settleIn(t, s, func(ctx context.Context) {
			if err := d.Ack(ctx); err != nil {
				t.Error(err)
			}
		})
		if m.state != msgInFlight || !d.Open() {
			t.Fatalf("message %s, open %t", m.state, d.Open())
		}
		b.Abandon(d, "test")
		s.Advance(b.Faults.RedeliverMax)
		b.Wake()
		if d2 := b.Deliver(bus.Live, "w"); d2.Attempt() != 2 {
			t.Fatalf("redelivered at attempt %d", d2.Attempt())
		}
		settleIn(t, s, func(ctx context.Context) {
			b.Faults.Silent = 0
			if err := d.Ack(ctx); !errors.Is(err, errChannelClosed) {
				t.Errorf("ack on the old delivery = %v, want a closed channel", err)
			}
		})
	})
}

func TestReleaseGoesToTheHead(t *testing.T) {
	s, b := newTestBus()
	b.Publish(bus.Live, []byte("1"), nil, "")
	b.Publish(bus.Live, []byte("2"), nil, "")
	d := b.Deliver(bus.Live, "w")
	settleIn(t, s, func(ctx context.Context) {
		if err := d.Release(ctx); err != nil {
			t.Error(err)
		}
	})
	if d2 := b.Deliver(bus.Live, "w"); string(d2.Body()) != "1" || d2.Attempt() != 1 {
		t.Fatalf("after a release got %q attempt %d", d2.Body(), d2.Attempt())
	}
}

func TestPausedStreamHandsOutNothing(t *testing.T) {
	_, b := newTestBus()
	b.Publish(bus.Resync, []byte("1"), nil, "")
	b.Paused[bus.Resync] = true
	if b.CanDeliver(bus.Resync) || b.CanDeliver(bus.Live) {
		t.Fatal("a paused stream delivers")
	}
	b.Paused[bus.Resync] = false
	if !b.CanDeliver(bus.Resync) {
		t.Fatal("a resumed stream does not deliver")
	}
}
