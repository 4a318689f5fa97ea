package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
)

// DefaultPrefetch is used when SubscribeOptions.Prefetch is not positive.
const DefaultPrefetch = 32

// Subscribe consumes the stream's queue on its own channel with manual acks
// and Qos(prefetch). The subscription reopens its channel after a lost
// connection; deliveries of the dead channel can no longer be settled
// (their outcome methods return ErrDeliveryLost) and come again.
//
// In ordered mode it consumes every partition queue of the stream, each on
// its own channel with Qos(prefetch), and merges them (bus.FanIn). The
// broker makes one consumer of each partition active at a time: this one
// gets deliveries from the partitions it is active on, and takes over
// others when their consumers go away.
func (b *Bus) Subscribe(ctx context.Context, stream bus.Stream, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	prefetch := opts.Prefetch
	if prefetch <= 0 {
		prefetch = DefaultPrefetch
	}
	queues := b.topo.consumedQueues(stream)
	if len(queues) == 1 {
		s, err := b.subscribeQueue(ctx, stream, queues[0], prefetch)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return b.subscribePartitions(ctx, stream, queues, prefetch)
}

func (b *Bus) subscribeQueue(ctx context.Context, stream bus.Stream, queue string, prefetch int) (*subscription, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	s := &subscription{
		b: b, stream: stream, queue: queue, prefetch: prefetch,
		out: make(chan bus.Delivery), stopped: make(chan struct{}), requeue: make(chan struct{}, 1),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	// Consume synchronously once, so a missing queue or a dead broker is
	// reported here rather than as a silent empty stream.
	cc, deliveries, err := s.open(ctx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed { // closed while we were opening the channel
		_ = cc.ch.Close()
		s.cancel()
		return nil, ErrClosed
	}
	b.subs[s] = struct{}{}
	b.wg.Add(1)
	go s.run(cc, deliveries)
	return s, nil
}

type subscription struct {
	b        *Bus
	stream   bus.Stream
	queue    string
	prefetch int

	out     chan bus.Delivery
	ctx     context.Context
	cancel  context.CancelFunc
	stopped chan struct{} // closed after out is closed

	// cur is the channel consumed now (nil after it died: the broker took
	// its unsettled messages back), buffered the deliveries received on it
	// and not yet handed out; together they are Unacked.
	cur      atomic.Pointer[consumerChannel]
	buffered atomic.Int64

	// received counts deliveries from the broker; requeue asks the
	// consumer to step back (see partitioned.rebalance).
	received atomic.Int64
	requeue  chan struct{}
}

// consumerChannel is one AMQP channel of a subscription and the count of
// deliveries handed out on it and not yet settled.
type consumerChannel struct {
	ch  *amqp.Channel
	tag string

	mu          sync.Mutex
	outstanding int
	draining    bool
	idle        chan struct{} // closed when draining and outstanding == 0
}

func (c *consumerChannel) handOut() {
	c.mu.Lock()
	c.outstanding++
	c.mu.Unlock()
}

func (c *consumerChannel) settled() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.outstanding--
	if c.draining && c.outstanding == 0 {
		close(c.idle)
	}
}

func (c *consumerChannel) unsettled() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.outstanding, 0)
}

func (c *consumerChannel) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if c.outstanding == 0 {
		close(c.idle)
	}
}

func (s *subscription) open(ctx context.Context) (*consumerChannel, <-chan amqp.Delivery, error) {
	ch, err := s.b.conn.channel(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe to %s: %w", s.stream, err)
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("subscribe to %s: set prefetch %d: %w", s.stream, s.prefetch, err)
	}
	tag := fmt.Sprintf("%s-%s", s.queue, newMessageID()[:8])
	deliveries, err := ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("subscribe to %s: consume queue %s: %w", s.stream, s.queue, err)
	}
	return &consumerChannel{ch: ch, tag: tag, idle: make(chan struct{})}, deliveries, nil
}

func (s *subscription) Deliveries() <-chan bus.Delivery { return s.out }

// Unacked counts the deliveries the broker handed this subscription's
// channel that are not settled: handed out, or received and waiting to be.
// It implements bus.UnackedCounter.
func (s *subscription) Unacked() int {
	n := int(s.buffered.Load())
	if cc := s.cur.Load(); cc != nil {
		n += cc.unsettled()
	}
	return n
}

// Close stops consuming and returns buffered deliveries to the queue.
// Deliveries already handed out stay valid until settled or Bus.Close.
func (s *subscription) Close() error {
	s.cancel()
	<-s.stopped
	return nil
}

func (s *subscription) run(cc *consumerChannel, deliveries <-chan amqp.Delivery) {
	defer s.b.wg.Done()
	defer func() {
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
	}()
	backoff := 100 * time.Millisecond
	for {
		if cc != nil {
			end := s.consume(cc, deliveries)
			if end == consumeStopped {
				break
			}
			if end == consumeRequeued {
				// Registered again on the same channel, behind the
				// consumers waiting for this queue; the deliveries
				// handed out stay valid on it.
				var err error
				if deliveries, err = s.reconsume(cc); err == nil {
					continue
				}
			}
			// The channel died (or the broker cancelled the consumer):
			// its unsettled messages go back to the queue.
			s.cur.Store(nil)
			_ = cc.ch.Close()
			s.b.conn.log.Warn("rabbitmq subscription interrupted; resubscribing", "stream", s.stream)
			cc = nil
		}
		var err error
		cc, deliveries, err = s.open(s.ctx)
		if err == nil {
			backoff = 100 * time.Millisecond
			continue
		}
		if s.ctx.Err() != nil || errors.Is(err, ErrClosed) {
			break
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.b.conn.log.Warn("rabbitmq resubscribe failed", "stream", s.stream, "retry_in", wait, "error", err)
		select {
		case <-s.ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(2*backoff, s.b.cfg.ReconnectMaxBackoff)
	}
	close(s.out)
	close(s.stopped)
	if cc == nil {
		return
	}
	// Keep the channel open until the deliveries handed out are settled:
	// acks must go over the channel that received the message.
	cc.drain()
	select {
	case <-cc.idle:
	case <-s.b.conn.done:
	}
	_ = cc.ch.Close()
}

// consumeEnd says why consume returned.
type consumeEnd int

const (
	consumeStopped  consumeEnd = iota // the subscription ends
	consumeDied                       // the channel died or the broker cancelled
	consumeRequeued                   // asked to step back (ordered mode's rebalancing)
)

// consume hands deliveries out until the subscription stops, the channel
// dies or a requeue is asked for. It takes every delivery as it arrives,
// so it knows how many the broker handed it (Unacked) even while the
// consumer takes none; the broker sends at most the prefetch unsettled.
func (s *subscription) consume(cc *consumerChannel, deliveries <-chan amqp.Delivery) consumeEnd {
	s.cur.Store(cc)
	defer s.buffered.Store(0)
	var waiting []amqp.Delivery
	var next *delivery // waiting[0], ready to hand out
	for {
		var out chan bus.Delivery
		if len(waiting) > 0 {
			out = s.out
			if next == nil {
				next = s.newDelivery(cc, waiting[0])
			}
		}
		select {
		case <-s.ctx.Done():
			for _, d := range waiting {
				_ = d.Nack(false, true)
			}
			s.stopConsuming(cc, deliveries)
			return consumeStopped
		case <-s.requeue:
			for _, d := range waiting {
				_ = d.Nack(false, true)
			}
			s.stopConsuming(cc, deliveries)
			return consumeRequeued
		case d, ok := <-deliveries:
			if !ok {
				return consumeDied // the broker requeues the waiting ones
			}
			waiting = append(waiting, d)
			s.buffered.Add(1)
			s.received.Add(1)
		case out <- next:
			// Counted once handed out: its settlement may come first,
			// which only drain, after consume returns, would mind.
			cc.handOut()
			s.buffered.Add(-1)
			waiting[0] = amqp.Delivery{}
			waiting, next = waiting[1:], nil
		}
	}
}

// reconsume registers a new consumer on cc's channel.
func (s *subscription) reconsume(cc *consumerChannel) (<-chan amqp.Delivery, error) {
	tag := fmt.Sprintf("%s-%s", s.queue, newMessageID()[:8])
	deliveries, err := cc.ch.Consume(s.queue, tag, false, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume queue %s again: %w", s.queue, err)
	}
	cc.tag = tag
	return deliveries, nil
}

// stopConsuming cancels the consumer and hands back what amqp091 buffered.
func (s *subscription) stopConsuming(cc *consumerChannel, deliveries <-chan amqp.Delivery) {
	if err := cc.ch.Cancel(cc.tag, false); err != nil {
		// The channel is gone; the broker requeues everything unacked.
		return
	}
	for d := range deliveries {
		_ = d.Nack(false, true)
	}
}

func (s *subscription) newDelivery(cc *consumerChannel, d amqp.Delivery) *delivery {
	return &delivery{sub: s, cc: cc, raw: d, headers: stringHeaders(d.Headers), attempt: attemptOf(d.Headers)}
}

// attemptOf is our attempt header (1 when absent) plus the quorum queue's
// count of earlier deliveries of this copy.
func attemptOf(h amqp.Table) int {
	// Bounds keep a corrupt header from overflowing the sum.
	const maxCount = 1 << 30
	attempt := 1
	if n, ok := toInt(h[bus.HeaderAttempt]); ok && n >= 1 && n <= maxCount {
		attempt = n
	}
	if n, ok := toInt(h["x-delivery-count"]); ok && n > 0 && n <= maxCount {
		attempt += n
	}
	return attempt
}

func toInt(v any) (int, bool) {
	switch v := v.(type) {
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil
	case int:
		return v, true
	case int8:
		return int(v), true
	case int16:
		return int(v), true
	case int32:
		return int(v), true
	case int64:
		return int(v), true
	case uint8:
		return int(v), true
	case uint16:
		return int(v), true
	case uint32:
		return int(v), true
	case uint64:
		if v > 1<<62 {
			return 0, false
		}
		return int(v), true
	}
	return 0, false
}

type delivery struct {
	sub     *subscription
	cc      *consumerChannel
	raw     amqp.Delivery
	headers map[string]string
	attempt int
	settled atomic.Bool
}

func (d *delivery) Body() []byte               { return d.raw.Body }
func (d *delivery) Headers() map[string]string { return d.headers }
func (d *delivery) Stream() bus.Stream         { return d.sub.stream }
func (d *delivery) Attempt() int               { return d.attempt }

func (d *delivery) Ack(ctx context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	defer d.cc.settled()
	return d.ack("ack")
}

func (d *delivery) ack(what string) error {
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("%s message on %s: %w: %w", what, d.sub.stream, ErrDeliveryLost, err)
	}
	return nil
}

func (d *delivery) Release(ctx context.Context) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	defer d.cc.settled()
	if err := d.raw.Nack(false, true); err != nil {
		return fmt.Errorf("release message on %s: %w: %w", d.sub.stream, ErrDeliveryLost, err)
	}
	return nil
}

func (d *delivery) Retry(ctx context.Context, delay time.Duration, reason string) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	topo := d.sub.b.topo
	tier := topo.tierFor(delay)
	h := copyHeaders(d.raw.Headers)
	h[bus.HeaderAttempt] = strconv.Itoa(d.attempt + 1)
	h[bus.HeaderRetryReason] = reason
	h[bus.HeaderStream] = string(d.sub.stream)
	return d.moveTo(ctx, "retry", topo.tierQueue(d.sub.stream, tier), h)
}

func (d *delivery) Park(ctx context.Context, reason string) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	h := copyHeaders(d.raw.Headers)
	delete(h, bus.HeaderRetryReason)
	h[bus.HeaderAttempt] = strconv.Itoa(d.attempt)
	h[bus.HeaderReason] = reason
	h[bus.HeaderStream] = string(d.sub.stream)
	h[bus.HeaderParkedAt] = time.Now().UTC().Format(time.RFC3339Nano)
	return d.moveTo(ctx, "park", d.sub.b.topo.parkedQueue(), h)
}

// moveTo publishes a copy to queue with confirm, then acks the original. If
// the publish fails the delivery stays unsettled, so the caller can choose
// another outcome (Release, say).
func (d *delivery) moveTo(ctx context.Context, what, queue string, h amqp.Table) error {
	msg := persistent(d.raw.Body, h, time.Now())
	if d.raw.ContentType != "" {
		msg.ContentType = d.raw.ContentType
	}
	if err := d.sub.b.pub.publish(ctx, []outgoing{{exchange: "", key: queue, msg: msg}}); err != nil {
		d.settled.Store(false)
		return fmt.Errorf("%s message on %s: publish to %s: %w", what, d.sub.stream, queue, err)
	}
	defer d.cc.settled()
	return d.ack(what)
}
