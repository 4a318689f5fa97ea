package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/eventsync/eventsync/bus"
)

// BusFaults are the per-settle probabilities of the bus's faults and the
// bounds of its delays.
type BusFaults struct {
	// Before fails a settle call before it reaches the broker.
	Before float64
	// After lets the broker take the outcome, then fails the call.
	After float64
	// Silent loses the outcome on the way and answers success: the
	// broker redelivers when it notices the connection is gone.
	Silent float64
	// Reorder hands out a random ready message instead of the oldest.
	Reorder float64
	// RedeliverMax bounds how long an unsettled delivery of a crashed or
	// disconnected consumer waits before it is redelivered.
	RedeliverMax time.Duration
}

type msgState int

const (
	msgReady msgState = iota
	msgDelayed
	msgInFlight
	msgAcked
	msgParked
)

func (s msgState) String() string {
	return [...]string{"ready", "delayed", "in flight", "acked", "parked"}[s]
}

// Message is one message the simulated broker holds.
type Message struct {
	ID     int
	Stream bus.Stream
	Body   []byte
	// Event is what the message carries, nil for a poison message.
	Event *Event
	// Poison says why a poison message cannot be applied.
	Poison string
	// ReplayOf is the parked message this one replays.
	ReplayOf *Message

	attempt int
	state   msgState
	dueAt   time.Time
	cur     *Delivery
	// AckedAs is the handler's result when the message was acked.
	AckedAs string
	// ParkReason is the reason it was parked with.
	ParkReason string
	Replayed   bool
}

// State is the message's state at the broker.
func (m *Message) State() string { return m.state.String() }

// Bus is a model of the broker: two streams of ready messages, delayed
// retries, in-flight deliveries with explicit outcomes, a parked queue,
// and redelivery of what a crashed consumer held.
type Bus struct {
	s      *Sched
	tr     *Trace
	Faults BusFaults
	// Paused streams hand out nothing.
	Paused map[bus.Stream]bool

	msgs    []*Message
	ready   map[bus.Stream][]*Message
	delayed []*Message
}

// NewBus returns an empty broker.
func NewBus(s *Sched, tr *Trace) *Bus {
	return &Bus{s: s, tr: tr, Paused: map[bus.Stream]bool{}, ready: map[bus.Stream][]*Message{}}
}

// Publish adds a message at the tail of its stream.
func (b *Bus) Publish(stream bus.Stream, body []byte, ev *Event, poison string) *Message {
	m := &Message{ID: len(b.msgs) + 1, Stream: stream, Body: body, Event: ev, Poison: poison, attempt: 1}
	b.msgs = append(b.msgs, m)
	b.ready[stream] = append(b.ready[stream], m)
	return m
}

// Messages returns every message ever published, in order.
func (b *Bus) Messages() []*Message { return b.msgs }

// CanDeliver reports whether stream has a message to hand out.
func (b *Bus) CanDeliver(stream bus.Stream) bool {
	return !b.Paused[stream] && len(b.ready[stream]) > 0
}

// Deliver hands the next message of stream to consumer.
func (b *Bus) Deliver(stream bus.Stream, consumer string) *Delivery {
	q := b.ready[stream]
	i := 0
	if len(q) > 1 && b.s.Chance(b.Faults.Reorder) {
		i = b.s.Rand().IntN(len(q))
	}
	m := q[i]
	b.ready[stream] = slices.Delete(q, i, i+1)
	m.state = msgInFlight
	d := &Delivery{bus: b, msg: m, attempt: m.attempt, consumer: consumer}
	m.cur = d
	return d
}

// Wake moves due delayed messages back to their streams, oldest due first.
func (b *Bus) Wake() {
	now := b.s.Now()
	var due []*Message
	b.delayed = slices.DeleteFunc(b.delayed, func(m *Message) bool {
		if !m.dueAt.After(now) {
			due = append(due, m)
			return true
		}
		return false
	})
	slices.SortStableFunc(due, func(x, y *Message) int { return x.dueAt.Compare(y.dueAt) })
	for _, m := range due {
		m.state = msgReady
		b.ready[m.Stream] = append(b.ready[m.Stream], m)
	}
}

// NextDue is when the earliest delayed message becomes ready.
func (b *Bus) NextDue() (at time.Time, ok bool) {
	for _, m := range b.delayed {
		if !ok || m.dueAt.Before(at) {
			at, ok = m.dueAt, true
		}
	}
	return at, ok
}

// Busy reports whether any message is ready, delayed or in flight.
func (b *Bus) Busy() bool {
	for _, m := range b.msgs {
		if m.state == msgReady || m.state == msgDelayed || m.state == msgInFlight {
			return true
		}
	}
	return false
}

// Counts returns how many messages are in each state.
func (b *Bus) Counts() map[string]int {
	out := map[string]int{}
	for _, m := range b.msgs {
		out[m.state.String()]++
	}
	return out
}

// Abandon redelivers d's message (attempt + 1) within RedeliverMax, as a
// broker does with the unsettled deliveries of a consumer whose connection
// went away. It does nothing when the broker already took an outcome.
func (b *Bus) Abandon(d *Delivery, why string) {
	m := d.msg
	if d.settled || d.gone {
		return
	}
	d.gone = true
	m.cur = nil
	m.attempt++
	m.state = msgDelayed
	m.dueAt = b.s.Now().Add(b.s.Between(0, b.Faults.RedeliverMax))
	b.delayed = append(b.delayed, m)
	b.tr.Addf("bus msg %d (%s) unsettled: %s; redelivered at +%s", m.ID, m.label(), why, fmtDur(m.dueAt.Sub(Epoch)))
}

func (m *Message) label() string {
	if m.Event != nil {
		return fmt.Sprintf("%s %s v%d %s", m.Stream, m.Event.Key, m.Event.Version, m.Event.Op)
	}
	return fmt.Sprintf("%s poison", m.Stream)
}

// Delivery is one hand-out of a message to a consumer. It implements
// bus.Delivery; every outcome call is a yield point that may fail on
// either side of the broker taking it.
type Delivery struct {
	bus      *Bus
	msg      *Message
	attempt  int
	consumer string
	// settled: the broker took an outcome for this delivery; gone: the
	// broker gave up on it (its consumer's connection went away).
	settled bool
	gone    bool
	// Result is the handler's result, recorded with an ack.
	Result string
	// RetryIn replaces the delay the handler passes to Retry: the engine
	// draws its jitter from the global random source, which a replay
	// cannot reproduce, so the run decides the delay from the seed.
	RetryIn time.Duration
}

var _ bus.Delivery = (*Delivery)(nil)

// Message is the delivered message.
func (d *Delivery) Message() *Message { return d.msg }

// Open reports whether the broker still waits for an outcome of this
// delivery.
func (d *Delivery) Open() bool { return !d.settled && !d.gone }

// Body implements bus.Delivery.
func (d *Delivery) Body() []byte { return d.msg.Body }

// Headers implements bus.Delivery.
func (d *Delivery) Headers() map[string]string { return nil }

// Stream implements bus.Delivery.
func (d *Delivery) Stream() bus.Stream { return d.msg.Stream }

// Attempt implements bus.Delivery.
func (d *Delivery) Attempt() int { return d.attempt }

// errChannelClosed answers an outcome for a delivery the broker already
// gave up on (its consumer's connection was recycled).
var errChannelClosed = errors.New("simulated bus: channel closed")

// errBusDown is the injected settle failure's cause.
var errBusDown = errors.New("simulated bus: connection reset (injected)")

func (d *Delivery) settle(ctx context.Context, op string, effect func()) error {
	t := TaskOf(ctx)
	if t == nil || t != d.bus.s.Current() {
		panic(fmt.Sprintf("sim: %s of a delivery outside its task's turn", op))
	}
	b := d.bus
	if err := b.s.Yield(); err != nil {
		return err
	}
	m := d.msg
	switch {
	case d.settled:
		return bus.ErrSettled
	case d.gone:
		b.tr.Addf("%s bus %s msg %d -> channel closed", t.Name, op, m.ID)
		return errChannelClosed
	case b.s.Chance(b.Faults.Before):
		b.tr.Addf("%s bus %s msg %d -> failed before the broker took it", t.Name, op, m.ID)
		return fmt.Errorf("%s: %w", op, errBusDown)
	case b.s.Chance(b.Faults.Silent):
		b.tr.Addf("%s bus %s msg %d -> lost on the way (answered ok)", t.Name, op, m.ID)
		return b.s.Yield()
	}
	effect()
	d.settled = true
	m.cur = nil
	if b.s.Chance(b.Faults.After) {
		b.tr.Addf("%s bus %s msg %d: taken, answer lost", t.Name, op, m.ID)
		return fmt.Errorf("%s: %w", op, errBusDown)
	}
	return b.s.Yield()
}

// Ack implements bus.Delivery.
func (d *Delivery) Ack(ctx context.Context) error {
	return d.settle(ctx, "ack", func() {
		m := d.msg
		m.state, m.AckedAs = msgAcked, d.Result
		d.bus.tr.Addf("bus msg %d (%s) acked as %s", m.ID, m.label(), d.Result)
	})
}

// Retry implements bus.Delivery. The delay is d.RetryIn, not delay (see
// RetryIn).
func (d *Delivery) Retry(ctx context.Context, delay time.Duration, reason string) error {
	return d.settle(ctx, "retry", func() {
		m := d.msg
		m.attempt = d.attempt + 1
		m.state = msgDelayed
		m.dueAt = d.bus.s.Now().Add(d.RetryIn)
		d.bus.delayed = append(d.bus.delayed, m)
		d.bus.tr.Addf("bus msg %d (%s) retry #%d at +%s: %s", m.ID, m.label(), m.attempt, fmtDur(m.dueAt.Sub(Epoch)), reason)
	})
}

// Park implements bus.Delivery.
func (d *Delivery) Park(ctx context.Context, reason string) error {
	return d.settle(ctx, "park", func() {
		m := d.msg
		m.state, m.ParkReason = msgParked, reason
		d.bus.tr.Addf("bus msg %d (%s) parked: %s", m.ID, m.label(), reason)
	})
}

// Release implements bus.Delivery.
func (d *Delivery) Release(ctx context.Context) error {
	return d.settle(ctx, "release", func() {
		m := d.msg
		m.state = msgReady
		// Handed back to the head, as a requeue does.
		d.bus.ready[m.Stream] = slices.Insert(d.bus.ready[m.Stream], 0, m)
		d.bus.tr.Addf("bus msg %d (%s) released", m.ID, m.label())
	})
}

// Replay publishes a parked message again, as an operator does after
// fixing the cause; the copy starts at attempt 1.
func (b *Bus) Replay(m *Message) *Message {
	m.Replayed = true
	c := b.Publish(m.Stream, m.Body, m.Event, m.Poison)
	c.ReplayOf = m
	b.tr.Addf("bus msg %d replays parked msg %d (%s)", c.ID, m.ID, m.label())
	return c
}
