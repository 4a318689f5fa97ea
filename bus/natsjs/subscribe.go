package natsjs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/eventsync/eventsync/bus"
)

// subscription pumps messages from the shared durable consumer into an
// unbuffered Deliveries channel. A slot is taken before each pull and given
// back when the delivery is settled, so at most Prefetch deliveries are
// unsettled at once; the iterator may hold up to Prefetch more, which are
// handed back (Nak) on Close.
type subscription struct {
	b          *Bus
	stream     bus.Stream
	prefetch   int
	deliveries chan bus.Delivery
	slots      chan struct{}
	presence   string // empty: this subscription keeps no presence message
	consumer   string // the durable consumer it pulls from

	// received counts messages handed out (ordered mode's rebalancing);
	// stepping is set while it steps back from its partition, and cur is
	// the iterator pulling now, so stepBack can drain it.
	received atomic.Int64
	stepping atomic.Bool
	mu       sync.Mutex
	cur      jetstream.MessagesContext

	ctx    context.Context // ends on Close or when the Subscribe context ends
	cancel context.CancelFunc
	done   chan struct{} // closed when every goroutine has ended
}

// Subscribe starts consuming stream; see subscription.
func (b *Bus) Subscribe(ctx context.Context, stream bus.Stream, opts bus.SubscribeOptions) (bus.Subscription, error) {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return nil, fmt.Errorf("natsjs: subscribe: %w", err)
	}
	prefetch := opts.Prefetch
	if prefetch <= 0 {
		prefetch = 1
	}
	if b.cfg.Partitions > 0 {
		return b.subscribePartitions(ctx, stream, prefetch)
	}
	s, err := b.subscribeConsumer(ctx, stream, consumerName, prefetch, true)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// subscribeConsumer pulls from one durable consumer of stream; present
// keeps a presence message for it (one per Subscribe call).
func (b *Bus) subscribeConsumer(ctx context.Context, stream bus.Stream, consumer string, prefetch int, present bool) (*subscription, error) {
	cons, err := b.js.Consumer(ctx, b.streamName(stream), consumer)
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe to %s: %w", b.streamName(stream), err)
	}
	iter, err := cons.Messages(b.pullOptions(prefetch)...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe to %s: %w", b.streamName(stream), err)
	}
	subCtx, cancel := context.WithCancel(ctx)
	s := &subscription{
		b:          b,
		stream:     stream,
		prefetch:   prefetch,
		deliveries: make(chan bus.Delivery),
		slots:      make(chan struct{}, prefetch),
		consumer:   consumer,
		cur:        iter,
		ctx:        subCtx,
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	if present {
		s.presence = b.presencePrefix(stream) + "." + nuid.Next()
		if err := s.announce(ctx); err != nil {
			cancel()
			iter.Stop()
			return nil, err
		}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cancel()
		iter.Stop()
		return nil, errors.New("natsjs: subscribe on a closed bus")
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.run(iter) }()
	go func() { defer wg.Done(); s.keepPresence() }()
	go func() {
		wg.Wait()
		s.withdraw()
		b.mu.Lock()
		delete(b.subs, s)
		b.mu.Unlock()
		close(s.done)
	}()
	return s, nil
}

func (s *subscription) Deliveries() <-chan bus.Delivery { return s.deliveries }

// Close stops pulling, hands buffered messages back and waits until the
// subscription's goroutines have ended.
func (s *subscription) Close() error {
	s.cancel()
	<-s.done
	return nil
}

func (s *subscription) announce(ctx context.Context) error {
	if _, err := s.b.js.Publish(ctx, s.presence, nil); err != nil {
		return fmt.Errorf("natsjs: register subscriber on %s: %w", s.b.presenceStream(), err)
	}
	return nil
}

func (s *subscription) keepPresence() {
	if s.presence == "" {
		return
	}
	t := time.NewTicker(presenceInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.ctx, presenceInterval)
			if err := s.announce(ctx); err != nil && s.ctx.Err() == nil {
				s.b.log.Debug("natsjs: presence heartbeat failed", "err", err)
			}
			cancel()
		}
	}
}

func (s *subscription) withdraw() {
	if s.presence == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.b.presence.Purge(ctx, jetstream.WithPurgeSubject(s.presence)); err != nil && !s.b.nc.IsClosed() {
		s.b.log.Debug("natsjs: presence withdraw failed; it expires by itself", "err", err, "after", presenceTTL)
	}
}

// run owns the Deliveries channel: it closes it when it returns.
func (s *subscription) run(iter jetstream.MessagesContext) {
	defer close(s.deliveries)
	for {
		failed := s.pump(iter)
		s.drain(iter)
		if !failed || s.ctx.Err() != nil {
			return
		}
		if s.stepping.Load() {
			// Stepped back (ordered mode): let the server pin another
			// subscription, then pull again behind it.
			s.unpin()
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(stepBackPause):
			}
			s.stepping.Store(false)
			var err error
			if iter, err = s.reopen(); err == nil {
				continue
			}
			s.b.log.Warn("natsjs: resubscribe after stepping back failed; retrying", "stream", s.stream, "err", err)
		}
		// The iterator ended without us asking (consumer deleted, server
		// restarted without its data): declare it again and resume.
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			var err error
			if iter, err = s.reopen(); err == nil {
				break
			}
			s.b.log.Warn("natsjs: resubscribe failed; retrying", "stream", s.stream, "err", err)
		}
	}
}

func (s *subscription) reopen() (jetstream.MessagesContext, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if err := s.b.declare(ctx); err != nil {
		return nil, err
	}
	cons, err := s.b.js.Consumer(ctx, s.b.streamName(s.stream), s.consumer)
	if err != nil {
		return nil, err
	}
	iter, err := cons.Messages(s.b.pullOptions(s.prefetch)...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cur = iter
	s.mu.Unlock()
	return iter, nil
}

// stepBack makes the subscription stop pulling from its consumer (the
// messages it holds are still handed out), have the server unpin it and
// pull again after stepBackPause: ordered mode's rebalancing.
func (s *subscription) stepBack() {
	if !s.stepping.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	iter := s.cur
	s.mu.Unlock()
	iter.Drain()
}

func (s *subscription) unpin() {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	st, err := s.b.js.Stream(ctx, s.b.streamName(s.stream))
	if err == nil {
		err = st.UnpinConsumer(ctx, s.consumer, priorityGroup)
	}
	if err != nil && s.ctx.Err() == nil {
		s.b.log.Debug("natsjs: unpin after stepping back failed; the pin moves after its TTL", "consumer", s.consumer, "err", err)
	}
}

// pullOptions keeps pull requests short-lived. nats.go's iterator skips
// asking for more messages when Next runs while its previous pull request is
// still being sent; with nothing left outstanding it sits idle until it misses
// two heartbeats. With the default 15 s heartbeat a subscription stalled 30 s
// about once in 250 deliveries on a loaded machine; with 2 s it recovers
// within 4 s. The 5 s expiry keeps what an idle pull request leaves in the
// iterator's buffer (two heartbeats and a timeout status) as small as the
// defaults do, so a buffer of one prefetch never overflows and drops a
// message while the worker is busy.
//
// In ordered mode the pulls name the partition consumers' priority group.
func (b *Bus) pullOptions(prefetch int) []jetstream.PullMessagesOpt {
	opts := []jetstream.PullMessagesOpt{
		jetstream.PullMaxMessages(prefetch),
		jetstream.PullExpiry(5 * time.Second),
		jetstream.PullHeartbeat(2 * time.Second),
	}
	if b.cfg.Partitions > 0 {
		opts = append(opts, jetstream.PullPriorityGroup(priorityGroup))
	}
	return opts
}

// pump hands out messages until the subscription ends (false) or the
// iterator fails for good (true).
func (s *subscription) pump(iter jetstream.MessagesContext) (failed bool) {
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.ctx.Done():
			return false
		}
		msg, err := iter.Next(jetstream.NextContext(s.ctx))
		if err != nil {
			<-s.slots
			switch {
			case s.ctx.Err() != nil:
				return false
			case errors.Is(err, jetstream.ErrMsgIteratorClosed), errors.Is(err, jetstream.ErrConsumerDeleted),
				errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrBadRequest):
				if s.b.nc.IsClosed() {
					return false
				}
				if !s.stepping.Load() {
					s.b.log.Warn("natsjs: subscription interrupted; resubscribing", "stream", s.stream, "err", err)
				}
				return true
			default:
				s.b.log.Debug("natsjs: pull failed; retrying", "stream", s.stream, "err", err)
				continue
			}
		}
		if s.handBackEarly(msg) {
			<-s.slots
			continue
		}
		s.received.Add(1)
		d := s.newDelivery(msg)
		select {
		case s.deliveries <- d:
		case <-s.ctx.Done():
			_ = d.Release(context.Background())
			return false
		}
	}
}

// drain hands every message the iterator still buffers back to the queue.
func (s *subscription) drain(iter jetstream.MessagesContext) {
	iter.Drain()
	for {
		msg, err := iter.Next(jetstream.NextMaxWait(2 * time.Second))
		if err != nil {
			iter.Stop()
			return
		}
		if s.handBackEarly(msg) {
			continue
		}
		if err := msg.Nak(); err != nil {
			s.b.log.Debug("natsjs: hand back on close failed; redelivered after ack wait", "err", err)
		}
	}
}

// handBackEarly hands the first delivery of a retried copy back to the
// server until its not-before time (see retry.go) and reports whether it
// did. It takes no worker's slot: the server holds the message meanwhile.
func (s *subscription) handBackEarly(msg jetstream.Msg) bool {
	md, err := msg.Metadata()
	if err != nil {
		return false
	}
	wait, early := deferral(msg.Headers(), md.NumDelivered, time.Now())
	if !early {
		return false
	}
	if err := msg.NakWithDelay(wait); err != nil {
		// Not lost: the server redelivers it after the ack wait.
		s.b.log.Debug("natsjs: handing back a retried message until due failed; redelivered after ack wait", "stream", s.stream, "err", err)
	}
	return true
}

func (s *subscription) newDelivery(msg jetstream.Msg) *delivery {
	var delivered uint64
	if md, err := msg.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	return &delivery{sub: s, msg: msg, attempt: attemptOf(msg.Headers(), delivered)}
}

// delivery is one message handed out; settle gives its slot back once.
type delivery struct {
	sub     *subscription
	msg     jetstream.Msg
	attempt int
	settled atomic.Bool

	headersOnce sync.Once
	headers     map[string]string
}

func (d *delivery) Body() []byte       { return d.msg.Data() }
func (d *delivery) Stream() bus.Stream { return d.sub.stream }
func (d *delivery) Attempt() int       { return d.attempt }

func (d *delivery) Headers() map[string]string {
	d.headersOnce.Do(func() { d.headers = fromHeader(d.msg.Headers()) })
	return d.headers
}

func (d *delivery) settle(fn func() error) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	defer func() { <-d.sub.slots }()
	return fn()
}

// Ack waits for the server's confirmation that the message is removed.
func (d *delivery) Ack(ctx context.Context) error {
	return d.settle(func() error {
		if err := d.msg.DoubleAck(ctx); err != nil {
			return fmt.Errorf("natsjs: ack on %s: %w; it will be redelivered after the ack wait", d.sub.stream, err)
		}
		return nil
	})
}

// Retry publishes a copy of the message to its stream with the next
// attempt and a not-before time, confirmed, and only then acks the
// original, so waiting never counts towards MaxDeliver (see retry.go). If
// the publish fails the delivery stays unsettled and the caller chooses
// another outcome (Release, say).
func (d *delivery) Retry(ctx context.Context, delay time.Duration, reason string) error {
	if !d.settled.CompareAndSwap(false, true) {
		return bus.ErrSettled
	}
	b, stream := d.sub.b, d.sub.stream
	h := retryHeaders(d.msg.Headers(), d.attempt+1, reason, time.Now().Add(max(delay, 0)))
	// Its own subject: in ordered mode, the key's partition.
	cm := &nats.Msg{Subject: d.msg.Subject(), Data: d.msg.Data(), Header: h}
	ack, err := b.js.PublishMsg(ctx, cm, jetstream.WithExpectStream(b.streamName(stream)))
	if err == nil && ack.Duplicate {
		err = errors.New("the server took the copy for a duplicate and did not store it")
	}
	if err != nil {
		d.settled.Store(false)
		return fmt.Errorf("natsjs: retry on %s: publish the retried copy: %w; the delivery is not settled", stream, err)
	}
	defer func() { <-d.sub.slots }()
	if err := d.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("natsjs: retry on %s: ack after queueing the retried copy: %w; the message comes back after the ack wait, besides its copy (versions absorb the repeat)", stream, err)
	}
	b.log.Debug("natsjs: retry scheduled", "stream", stream, "attempt", d.attempt, "delay", delay, "reason", reason)
	return nil
}

func (d *delivery) Release(_ context.Context) error {
	return d.settle(func() error {
		if err := d.msg.Nak(); err != nil {
			return fmt.Errorf("natsjs: release on %s: %w; it will be redelivered after the ack wait", d.sub.stream, err)
		}
		return nil
	})
}

// Park publishes the message with its diagnosis to the parked stream and
// acks the original only after the server confirmed the parked copy.
func (d *delivery) Park(ctx context.Context, reason string) error {
	return d.settle(func() error {
		b := d.sub.b
		h := parkHeaders(d.msg.Headers(), reason, d.attempt, d.sub.stream)
		pm := &nats.Msg{Subject: b.parkedSubject(), Data: d.msg.Data(), Header: h}
		if _, err := b.js.PublishMsg(ctx, pm, jetstream.WithExpectStream(b.parkedStream())); err != nil {
			// Not parked: come back later rather than lose the message.
			_ = d.msg.NakWithDelay(5 * time.Second)
			return fmt.Errorf("natsjs: park on %s: %w; the message stays queued and comes back", d.sub.stream, err)
		}
		if err := d.msg.DoubleAck(ctx); err != nil {
			return fmt.Errorf("natsjs: ack of parked message on %s: %w; it may be delivered again and parked twice", d.sub.stream, err)
		}
		return nil
	})
}
