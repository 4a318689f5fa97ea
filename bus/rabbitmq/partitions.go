package rabbitmq

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

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
	stop             chan struct{}
	done             chan struct{}
	presence         *amqp.Channel // consumes the workers queue; owned by rebalanceLoop once started
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
	p := &partitioned{Subscription: bus.FanIn(subs...), b: b, stream: stream, parts: parts, stop: make(chan struct{}), done: make(chan struct{})}
	p.present(ctx) // counted in Stats from here on
	go p.rebalanceLoop(ctx)
	return p, nil
}

// Close stops rebalancing, then every partition's consumer.
func (p *partitioned) Close() error {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
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

func (p *partitioned) rebalanceLoop(ctx context.Context) {
	defer close(p.done)
	defer func() {
		if p.presence != nil {
			_ = p.presence.Close()
		}
	}()
	every := p.b.cfg.RebalanceInterval
	// Workers started together would otherwise look at the same moments.
	t := time.NewTimer(every/2 + rand.N(every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case <-p.b.conn.done: // the bus closed
			return
		case <-t.C:
		}
		p.present(ctx)
		p.rebalance(ctx)
		t.Reset(every/2 + rand.N(every))
	}
}

// present keeps this subscription's consumer on the workers queue,
// opening it again after a lost connection.
func (p *partitioned) present(ctx context.Context) {
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
	share := (len(p.parts) + workers - 1) / workers
	if len(active) <= share {
		return
	}
	rand.Shuffle(len(active), func(i, j int) { active[i], active[j] = active[j], active[i] })
	for _, i := range active[share:] {
		select {
		case p.parts[i].requeue <- struct{}{}:
		default:
		}
	}
	p.b.conn.log.Info("rabbitmq ordered mode: handing partitions to other workers", "stream", p.stream,
		"active", len(active), "workers", workers, "share", share)
}
