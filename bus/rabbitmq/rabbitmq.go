// Package rabbitmq is the RabbitMQ adapter of the bus port (amqp091-go).
//
// Topology, declared idempotently at Open under a namespace <ns>:
//
//	<ns>                         durable direct exchange; routing key = stream
//	<ns>.live, <ns>.resync       quorum queues bound by "live" / "resync"
//	<ns>.retry.<stream>.<tier>   quorum queues with a message TTL that
//	                             dead-letter (at-least-once) back to <ns>
//	<ns>.parked                  quorum queue of parked messages
//
// A stream message returned to its queue more than Config.DeliveryLimit
// times (it crashes every consumer, say) is dead-lettered to the parked
// queue by the broker itself, with reason "delivery_limit".
//
// Every publish uses publisher confirms and the mandatory flag, so Publish
// returns nil only when the broker has stored every message in a queue.
// Retry and Park publish the copy first and acknowledge the original only
// after its confirm: a crash in between duplicates, never loses. Lost
// connections are re-established with capped, jittered backoff; subscriptions
// resume by themselves and Publish waits for the connection (bounded by its
// context).
//
// Attempt is the x-eventsync-attempt header (set by Retry, 1 when absent)
// plus the quorum queue's x-delivery-count. RabbitMQ before 4.3 counts a
// requeue by Release or by closing a subscription as a delivery too, so
// there Release increases Attempt by one (see Bus.ReleaseCountsAttempt and
// bustest.Features.ReleaseCountsAttempt).
package rabbitmq

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/redact"
)

// Bus is the RabbitMQ implementation of bus.Bus. It is safe for concurrent use.
type Bus struct {
	cfg  Config
	topo topology
	conn *connManager
	pub  *publisher

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	wg     sync.WaitGroup // subscription goroutines
}

var _ bus.Bus = (*Bus)(nil)

// Open validates cfg, connects, declares the topology and returns the bus.
// A wrong URL or an unreachable broker fails here with a message naming the
// broker's host and the fix.
func Open(ctx context.Context, cfg Config) (_ *Bus, err error) {
	secrets := redact.NewScrubber(cfg.URL) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open RabbitMQ bus: %w", err)
	}
	topo := topology{ns: cfg.Namespace, tiers: cfg.RetryTiers, deliveryLimit: cfg.DeliveryLimit, partitions: cfg.Partitions}
	m, err := newConnManager(cfg, topo)
	if err != nil {
		return nil, err
	}
	return &Bus{cfg: cfg, topo: topo, conn: m, pub: &publisher{m: m}, subs: map[*subscription]struct{}{}}, nil
}

// Namespace returns the prefix of the bus's exchange and queues.
func (b *Bus) Namespace() string { return b.cfg.Namespace }

// ServerVersion is the RabbitMQ version the broker announced, e.g. "3.13.7".
func (b *Bus) ServerVersion() string { return b.conn.serverVersion }

// ReleaseCountsAttempt reports whether this broker counts a Release (a
// requeue by basic.nack) as a delivery, so that Attempt grows by one after
// it. RabbitMQ before 4.3 does; from 4.3 on only failed deliveries count.
func (b *Bus) ReleaseCountsAttempt() bool {
	var major, minor int
	if _, err := fmt.Sscanf(b.conn.serverVersion, "%d.%d", &major, &minor); err != nil {
		return true // unknown: assume the older, counting behaviour
	}
	return major < 4 || major == 4 && minor < 3
}

// Queues lists every queue name of the namespace (streams or their
// partitions, retry tiers, parked), e.g. for operators and test cleanup.
func (b *Bus) Queues() []string { return b.topo.allQueues() }

// Exchanges lists every exchange of the namespace: the main one, and in
// ordered mode each stream's consistent-hash exchange.
func (b *Bus) Exchanges() []string {
	xs := []string{b.topo.exchange()}
	if b.topo.partitions > 0 {
		for _, s := range bus.Streams {
			xs = append(xs, b.topo.hashExchange(s))
		}
	}
	return xs
}

// Partitions is the partition count of ordered mode, 0 when off.
func (b *Bus) Partitions() int { return b.topo.partitions }

// Publish stores msgs on the stream's queue with publisher confirms.
func (b *Bus) Publish(ctx context.Context, stream bus.Stream, msgs ...bus.Message) error {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if len(msgs) == 0 {
		return nil
	}
	if b.isClosed() {
		return ErrClosed
	}
	out := make([]outgoing, len(msgs))
	now := time.Now()
	for i, m := range msgs {
		headers := make(amqp.Table, len(m.Headers))
		for k, v := range m.Headers {
			headers[k] = v
		}
		b.setPartitionKey(headers, m)
		out[i] = outgoing{exchange: b.topo.exchange(), key: string(stream), msg: persistent(m.Body, headers, now)}
	}
	if err := b.pub.publish(ctx, out); err != nil {
		return fmt.Errorf("publish %d messages to %s: %w", len(msgs), stream, err)
	}
	return nil
}

// setPartitionKey sets the header ordered mode routes by, unless the
// publisher set it: the event's entity:key, or for a message that is no
// event a random one (any partition will do).
func (b *Bus) setPartitionKey(h amqp.Table, m bus.Message) {
	if b.topo.partitions == 0 {
		return
	}
	if k, ok := h[bus.HeaderPartitionKey].(string); ok && k != "" {
		return
	}
	key := bus.PartitionKey(bus.Message{Body: m.Body})
	if key == "" {
		key = newMessageID()
	}
	h[bus.HeaderPartitionKey] = key
}

func persistent(body []byte, headers amqp.Table, now time.Time) amqp.Publishing {
	return amqp.Publishing{
		Headers:      headers,
		ContentType:  "application/json",
		DeliveryMode: amqp.Persistent,
		Timestamp:    now,
		Body:         body,
	}
}

// Stats reads queue depths and consumer counts with passive declares.
// In ordered mode Ready adds up the stream's partition queues and
// Consumers counts the subscriptions (the workers queue's consumers).
// Delayed is the sum of the stream's retry tiers. Unacked is -1: AMQP
// tells a client only a queue's ready messages and consumers (the
// management API knows more, but may not be enabled); each subscription
// counts its own instead (UnackedCounter). Parked is the parked queue's
// ready count, so messages a listing holds for the moment are missing.
func (b *Bus) Stats(ctx context.Context, stream bus.Stream) (bus.StreamStats, error) {
	if _, err := bus.ParseStream(string(stream)); err != nil {
		return bus.StreamStats{}, fmt.Errorf("stats: %w", err)
	}
	ch, err := b.conn.channel(ctx)
	if err != nil {
		return bus.StreamStats{}, fmt.Errorf("stats of %s: %w", stream, err)
	}
	defer func() { _ = ch.Close() }()
	st := bus.StreamStats{Stream: stream, Unacked: -1}
	for _, name := range b.topo.consumedQueues(stream) {
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, quorumArgs())
		if err != nil {
			return bus.StreamStats{}, fmt.Errorf("stats of %s: inspect queue %s: %w", stream, name, err)
		}
		st.Ready += int64(q.Messages)
		st.Consumers += q.Consumers
	}
	if b.topo.partitions > 0 {
		// A partition queue counts only its active consumer; the workers
		// queue has one consumer per subscription.
		name := b.topo.workersQueue(stream)
		q, err := ch.QueueDeclarePassive(name, true, false, false, false, quorumArgs())
		if err != nil {
			return bus.StreamStats{}, fmt.Errorf("stats of %s: inspect queue %s: %w", stream, name, err)
		}
		st.Consumers = q.Consumers
	}
	for _, tier := range b.topo.tiers {
		name := b.topo.tierQueue(stream, tier)
		tq, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		if err != nil {
			return bus.StreamStats{}, fmt.Errorf("stats of %s: inspect retry queue %s: %w", stream, name, err)
		}
		st.Delayed += int64(tq.Messages)
	}
	pq, err := ch.QueueDeclarePassive(b.topo.parkedQueue(), true, false, false, false, nil)
	if err != nil {
		return bus.StreamStats{}, fmt.Errorf("stats of %s: inspect parked queue %s: %w", stream, b.topo.parkedQueue(), err)
	}
	st.Parked = int64(pq.Messages)
	return st, nil
}

// Close stops every subscription (their unsettled deliveries return to the
// queue), then closes the connection. It is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	// Closing channels is a handshake with the broker, which it never
	// answers while it blocks the connection over a resource alarm; after
	// closeTimeout the connection is dropped, which ends those waits too.
	polite := make(chan struct{})
	go func() {
		defer close(polite)
		for _, s := range subs {
			_ = s.Close()
		}
		b.pub.close()
	}()
	select {
	case <-polite:
	case <-time.After(closeTimeout):
		b.conn.log.Warn("rabbitmq did not answer while closing (is the connection blocked?); dropping it", "broker", hostPort(b.cfg.URL), "waited", closeTimeout)
	}
	b.conn.close() // ends subscriptions still waiting for unsettled deliveries
	<-polite
	b.wg.Wait()
	return nil
}

func (b *Bus) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// brokerHeaders are set by RabbitMQ itself; they are not the publisher's
// and are not copied when a message is republished.
func isBrokerHeader(k string) bool {
	switch k {
	case "x-death", "x-delivery-count", "x-acquired-count":
		return true
	}
	return strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") || strings.HasPrefix(k, "x-opt-")
}

// stringHeaders converts AMQP headers to the port's string map, leaving out
// the broker's own headers.
func stringHeaders(t amqp.Table) map[string]string {
	out := make(map[string]string, len(t))
	for k, v := range t {
		if isBrokerHeader(k) {
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case []byte:
			out[k] = string(v)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// copyHeaders returns the publisher's headers of t, for republishing.
func copyHeaders(t amqp.Table) amqp.Table {
	out := make(amqp.Table, len(t)+4)
	for k, v := range t {
		if !isBrokerHeader(k) {
			out[k] = v
		}
	}
	return out
}
