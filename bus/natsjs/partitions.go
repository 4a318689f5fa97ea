package natsjs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/setting"
)

// Per-key ordered mode (Config.Partitions > 0). A stream's messages are
// published to <ns>.<stream>.<i>, i = FNV-1a(partition key) mod N, and each
// partition has its own durable consumer eventsync-p<i> filtered to that
// subject, with a pinned priority group: the server hands a partition to
// one subscription at a time (the pinned client) and moves it to another
// when that one stops pulling for PinnedTTL (a killed worker) or steps back.
// Pinned priority groups came with nats-server 2.11; an older server is
// refused at Open.
//
// Rebalancing works as on RabbitMQ: every RebalanceInterval a subscription
// counts the subscriptions of its stream (the presence stream) and the
// partitions it received messages from since the last look; above its
// share, ceil(N / subscriptions), it steps back from the excess at random:
// it stops pulling there (messages it buffered are still handed out), has
// the server unpin it, and pulls again after stepBackPause, behind the
// others' pull requests.

const (
	priorityGroup = "eventsync"
	// pinnedTTL is how long a partition stays with a subscription that
	// stopped pulling (a killed worker) before another gets it. Pull
	// requests are renewed every few seconds (pullOptions).
	pinnedTTL     = 10 * time.Second
	stepBackPause = 3 * time.Second
	maxPartitions = 1024
	// pinnedSince is the first nats-server version with pinned priority
	// groups.
	pinnedSince = "2.11.0"
)

func partitionConsumer(i int) string { return "eventsync-p" + strconv.Itoa(i) }

func (b *Bus) partitionSubject(s bus.Stream, i int) string {
	return b.subject(s) + "." + strconv.Itoa(i)
}

// partitionOf maps a partition key to its partition.
func (b *Bus) partitionOf(key string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(b.cfg.Partitions))
}

// publishSubject is where m goes on stream s; in ordered mode it also sets
// m's partition key header (h) unless the publisher did.
func (b *Bus) publishSubject(s bus.Stream, body []byte, h nats.Header) (string, nats.Header) {
	if b.cfg.Partitions == 0 {
		return b.subject(s), h
	}
	key := h.Get(bus.HeaderPartitionKey)
	if key == "" {
		key = bus.PartitionKey(bus.Message{Body: body})
		if key == "" {
			key = nats.NewInbox() // not an event: any partition will do
		}
		if h == nil {
			h = nats.Header{}
		}
		h.Set(bus.HeaderPartitionKey, key)
	}
	return b.partitionSubject(s, b.partitionOf(key)), h
}

// consumerRef is one durable consumer a subscription to a stream pulls from.
type consumerRef struct {
	name, filter string
}

func (b *Bus) consumersOf(s bus.Stream) []consumerRef {
	if b.cfg.Partitions == 0 {
		return []consumerRef{{name: consumerName}}
	}
	out := make([]consumerRef, b.cfg.Partitions)
	for i := range out {
		out[i] = consumerRef{name: partitionConsumer(i), filter: b.partitionSubject(s, i)}
	}
	return out
}

// checkPinnedSupport refuses ordered mode on a server without pinned
// priority groups.
func (b *Bus) checkPinnedSupport() error {
	if b.cfg.Partitions == 0 {
		return nil
	}
	v := b.nc.ConnectedServerVersion()
	if !versionAtLeast(v, pinnedSince) {
		return setting.Errorf("bus_partitions", "natsjs: bus_partitions %d needs nats-server %s or later (pinned priority groups give each partition one consumer at a time); this server is %s: upgrade it, use RabbitMQ, or set bus_partitions: 0", b.cfg.Partitions, pinnedSince, v)
	}
	return nil
}

// versionAtLeast compares dotted versions such as 2.9.10 and 2.11.0.
func versionAtLeast(v, min string) bool {
	a, c := strings.Split(strings.SplitN(v, "-", 2)[0], "."), strings.Split(min, ".")
	for i := range c {
		var x, y int
		if i < len(a) {
			x, _ = strconv.Atoi(a[i])
		}
		y, _ = strconv.Atoi(c[i])
		if x != y {
			return x > y
		}
	}
	return true
}

// retireOtherMode removes the consumers of the other mode (or partitions
// beyond N) on stream s before this mode's are created: a work-queue
// stream refuses consumers whose subjects overlap. They go only when no
// message waits for them; otherwise switching would strand those, and Open
// fails naming the setting.
func (b *Bus) retireOtherMode(ctx context.Context, s bus.Stream) error {
	st, err := b.js.Stream(ctx, b.streamName(s))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natsjs: open stream %s: %w", b.streamName(s), err)
	}
	var stale []string
	for name := range st.ConsumerNames(ctx).Name() {
		switch {
		case name == consumerName && b.cfg.Partitions > 0:
			stale = append(stale, name)
		case strings.HasPrefix(name, "eventsync-p"):
			i, err := strconv.Atoi(strings.TrimPrefix(name, "eventsync-p"))
			if err == nil && i >= b.cfg.Partitions {
				stale = append(stale, name)
			}
		}
	}
	for _, name := range stale {
		c, err := st.Consumer(ctx, name)
		if err != nil {
			return fmt.Errorf("natsjs: inspect consumer %s on %s: %w", name, b.streamName(s), err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("natsjs: inspect consumer %s on %s: %w", name, b.streamName(s), err)
		}
		if info.NumPending > 0 || info.NumAckPending > 0 {
			return setting.Errorf("bus_partitions", "natsjs: bus_partitions is %d, but consumer %s of stream %s, left by another bus_partitions, still has %d messages waiting and %d unacknowledged; run workers with the old bus_partitions until they are settled, then restart this one",
				b.cfg.Partitions, name, b.streamName(s), info.NumPending, info.NumAckPending)
		}
		if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("natsjs: delete consumer %s of another bus_partitions on %s: %w", name, b.streamName(s), err)
		}
	}
	return nil
}

// partitioned is an ordered-mode subscription: one subscription per
// partition consumer, merged, and the loop that rebalances them.
type partitioned struct {
	bus.Subscription
	b      *Bus
	stream bus.Stream
	parts  []*subscription
	reb    *bus.Rebalancer
}

func (b *Bus) subscribePartitions(ctx context.Context, stream bus.Stream, prefetch int) (bus.Subscription, error) {
	refs := b.consumersOf(stream)
	parts := make([]*subscription, 0, len(refs))
	subs := make([]bus.Subscription, 0, len(refs))
	for i, ref := range refs {
		// One presence message per subscription, not per partition.
		s, err := b.subscribeConsumer(ctx, stream, ref.name, prefetch, i == 0)
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
	p.reb = bus.StartRebalancer(ctx, b.cfg.RebalanceInterval, nil, p.rebalance, nil)
	return p, nil
}

func (p *partitioned) Close() error {
	p.reb.Stop()
	return p.Subscription.Close()
}

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
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := p.b.presence.Info(cctx, jetstream.WithSubjectFilter(p.b.presencePrefix(p.stream)+".*"))
	if err != nil {
		p.b.log.Debug("natsjs rebalance: cannot count the subscriptions", "err", err)
		return
	}
	workers := max(1, len(info.State.Subjects))
	excess, share := bus.Excess(active, len(p.parts), workers)
	if len(excess) == 0 {
		return
	}
	for _, i := range excess {
		p.parts[i].stepBack()
	}
	p.b.log.Info("natsjs ordered mode: handing partitions to other workers", "stream", p.stream,
		"active", len(active), "workers", workers, "share", share)
}
