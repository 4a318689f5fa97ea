package rabbitmq

import (
	"context"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
)

// A single active consumer is first come, first served: the first worker
// to subscribe is active on every partition and the others wait in line,
// taking over only when it goes away. Rebalancing spreads the partitions:
// every RebalanceInterval a subscription counts the workers subscribed (the
// consumers of <ns>.<stream>.workers, where each subscription keeps one;
// a partition queue counts only its active consumer) and the partitions it was
// handed deliveries from since the last look (those it is active on;
// only the active consumer gets any). Above its share, ceil(partitions /
// workers), it steps back from the excess, chosen at random: it cancels
// those consumers and registers them again, at the end of the line, so
// the next waiting worker becomes active. Deliveries already handed out
// stay valid and are settled as usual; the next worker may meanwhile get
// the key's following events, which is where leases and fencing keep the
// handover safe.

// partitioned is an ordered-mode subscription: one consumer per
// partition queue, merged, and the loop that rebalances them.
type partitioned struct {
	bus.Subscription // the merged deliveries
	b                *Bus
	stream           bus.Stream
	parts            []*subscription
	rebalancer       *bus.Rebalancer
	mu               sync.Mutex
	presence         *amqp.Channel // consumes the workers queue; guarded by mu
}

func (b *Bus) subscribePartitions(ctx context.Context, stream bus.Stream, queues []string, prefetch int) (bus.Subscription, error) {
	parts := make([]*subscription, 0, len(queues))
	subs := make([]bus.Subscription, 0, len(queues))
	for _, q := range queues {
		s, err := b.subscribeQueue(ctx, stream, q, prefetch)
		if err != nil {
			for _, s := range parts {
				_ = s.Close()
			}
			return nil, err
		}
		parts = append(parts, s)
		subs = append(subs, s)
	}
	p := &partitioned{Subscription: bus.FanIn(subs...), b: b, stream: stream, parts: parts}
	p.present(ctx) // counted in Stats from here on
	p.rebalancer = bus.StartRebalancer(ctx, b.cfg.RebalanceInterval, b.conn.done, func(ctx context.Context) {
		p.present(ctx)
		p.rebalance(ctx)
	}, p.absent)
	return p, nil
}

// Close stops rebalancing, then every partition's consumer.
func (p *partitioned) Close() error {
	p.rebalancer.Stop() // and absent
	return p.Subscription.Close()
}

// Unacked implements bus.UnackedCounter.
func (p *partitioned) Unacked() int {
	n := 0
	for _, s := range p.parts {
		n += s.Unacked()
	}
	return n
}

// present keeps this subscription's consumer on the workers queue,
// opening it again after a lost connection.
func (p *partitioned) present(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.presence != nil && !p.presence.IsClosed() {
		return
	}
	ch, err := p.b.conn.channel(ctx)
	if err != nil {
		return // reconnecting: next time
	}
	q := p.b.topo.workersQueue(p.stream)
	if _, err := ch.Consume(q, fmt.Sprintf("%s-%s", q, newMessageID()[:8]), false, false, false, false, nil); err != nil {
		_ = ch.Close()
		p.b.conn.log.Warn("rabbitmq ordered mode: cannot register with the workers queue; partitions are not rebalanced", "queue", q, "error", err)
		return
	}
	p.presence = ch
}

// absent removes this subscription from the workers queue.
func (p *partitioned) absent() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.presence != nil {
		_ = p.presence.Close()
		p.presence = nil
	}
}

// rebalance steps back from the partitions above this subscription's share.
func (p *partitioned) rebalance(ctx context.Context) {
	var active []int
	for i, s := range p.parts {
		if s.received.Swap(0) > 0 {
			active = append(active, i)
		}
	}
	if len(active) <= 1 {
		return
	}
	ch, err := p.b.conn.channel(ctx)
	if err != nil {
		return // reconnecting: next time
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(p.b.topo.workersQueue(p.stream), true, false, false, false, nil)
	if err != nil {
		p.b.conn.log.Debug("rabbitmq rebalance: cannot count the workers", "error", err)
		return
	}
	workers := max(1, q.Consumers)
	excess, share := bus.Excess(active, len(p.parts), workers)
	if len(excess) == 0 {
		return
	}
	for _, i := range excess {
		select {
		case p.parts[i].requeue <- struct{}{}:
		default:
		}
	}
	p.b.conn.log.Info("rabbitmq ordered mode: handing partitions to other workers", "stream", p.stream,
		"active", len(active), "workers", workers, "share", share)
}
