package demo

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eventsync/eventsync/bus"
)

// HeaderChaos marks the copies the chaos layer publishes, so a parked or
// logged message shows where it came from.
const HeaderChaos = "x-eventsync-demo-chaos"

// ChaosCounts is what the chaos layer injected.
type ChaosCounts struct {
	// Duplicates are extra copies of deliveries published to their stream.
	Duplicates int64 `json:"duplicates"`
	// Reordered are deliveries handed back with a short delayed retry
	// before any worker saw them, so events behind them overtook them.
	Reordered int64 `json:"reordered"`
}

// chaos counts injections of every chaosBus that shares it.
type chaos struct {
	plan       FaultPlan
	seed       uint64
	subs       atomic.Uint64
	duplicates atomic.Int64
	reordered  atomic.Int64
}

func (c *chaos) counts() ChaosCounts {
	return ChaosCounts{Duplicates: c.duplicates.Load(), Reordered: c.reordered.Load()}
}

// wrap returns b with chaos injected between the bus and its subscribers.
// Publishing, stats and the parked queue are b's own.
func (c *chaos) wrap(b bus.Bus) bus.Bus {
	if c.plan.DuplicateRate == 0 && c.plan.ReorderRate == 0 {
		return b
	}
	return &chaosBus{Bus: b, chaos: c}
}

// chaosBus is a bus.Bus decorator that duplicates and reorders deliveries
// before the worker sees them: the failures a real broker produces on
// redelivery after a crash or a lost ack, made frequent.
type chaosBus struct {
	bus.Bus
	chaos *chaos
}

func (b *chaosBus) Subscribe(ctx context.Context, stream bus.Stream, opts bus.SubscribeOptions) (bus.Subscription, error) {
	inner, err := b.Bus.Subscribe(ctx, stream, opts)
	if err != nil {
		return nil, err
	}
	s := &chaosSub{
		inner:  inner,
		bus:    b.Bus,
		chaos:  b.chaos,
		stream: stream,
		rng:    rand.New(rand.NewPCG(b.chaos.seed, b.chaos.subs.Add(1))),
		out:    make(chan bus.Delivery),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.run(ctx)
	return s, nil
}

// chaosSub forwards the inner subscription's deliveries through one
// goroutine, owned by the subscription and stopped by Close.
type chaosSub struct {
	inner  bus.Subscription
	bus    bus.Bus
	chaos  *chaos
	stream bus.Stream
	rng    *rand.Rand // used only by run
	out    chan bus.Delivery
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

func (s *chaosSub) Deliveries() <-chan bus.Delivery { return s.out }

func (s *chaosSub) Close() error {
	var err error
	s.once.Do(func() {
		close(s.stop)
		err = s.inner.Close()
		<-s.done
	})
	return err
}

func (s *chaosSub) run(ctx context.Context) {
	defer close(s.done)
	defer close(s.out)
	in := s.inner.Deliveries()
	plan := s.chaos.plan
	for {
		var d bus.Delivery
		var ok bool
		select {
		case <-s.stop:
			return
		case d, ok = <-in:
			if !ok {
				return
			}
		}
		// The copy is confirmed before the original can be acked, so the
		// stream is never empty while a duplicate is on its way.
		if s.rng.Float64() < plan.DuplicateRate {
			copyMsg := bus.Message{Body: d.Body(), Headers: map[string]string{HeaderChaos: "duplicate"}}
			if err := s.bus.Publish(ctx, s.stream, copyMsg); err == nil {
				s.chaos.duplicates.Add(1)
			}
		}
		if s.rng.Float64() < plan.ReorderRate {
			delay := time.Duration(1 + s.rng.Int64N(int64(max(plan.ReorderMax, time.Millisecond))))
			if err := d.Retry(ctx, delay, "demo chaos: reordered"); err == nil {
				s.chaos.reordered.Add(1)
				continue
			}
		}
		select {
		case s.out <- d:
		case <-s.stop:
			// Never handed out: give it back for another subscriber.
			_ = d.Release(context.WithoutCancel(ctx))
			return
		}
	}
}
