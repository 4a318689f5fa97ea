package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
)

// DefaultMaxDeliver is Config.MaxDeliver's default: above the engine's
// attempt limit (25), so only messages no worker settles reach it.
const DefaultMaxDeliver = 30

// parkerQueue is the queue group of every bus's advisory subscription, so
// one process moves each stranded message.
const parkerQueue = "eventsync-parker"

// A message that reached the consumer's MaxDeliver is no longer delivered
// but stays in the work-queue stream. The server announces it on the
// max-deliveries advisory subject; the bus moves it to the parked stream
// with reason "delivery_limit", as the RabbitMQ broker does with its
// delivery limit. Advisories are not persisted: a message stranded while no
// eventsync process is connected stays in its stream (Stats counts it) until
// it is moved by hand.
func (b *Bus) watchMaxDeliveries() error {
	if b.cfg.MaxDeliver < 0 {
		return nil
	}
	for _, s := range bus.Streams {
		stream := s
		subject := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + b.streamName(stream) + "." + consumerName
		sub, err := b.nc.QueueSubscribe(subject, parkerQueue, func(m *nats.Msg) { b.parkStranded(stream, m.Data) })
		if err != nil {
			for _, p := range b.parkers {
				_ = p.Unsubscribe()
			}
			return fmt.Errorf("natsjs: subscribe to %s: %w", subject, err)
		}
		b.parkers = append(b.parkers, sub)
	}
	return nil
}

// maxDeliveriesAdvisory is the part of io.nats.jetstream.advisory.v1.max_deliver we use.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// parseMaxDeliveriesAdvisory decodes a max-deliveries advisory.
func parseMaxDeliveriesAdvisory(data []byte) (maxDeliveriesAdvisory, error) {
	var a maxDeliveriesAdvisory
	if err := json.Unmarshal(data, &a); err != nil {
		return a, fmt.Errorf("decode max-deliveries advisory: %w", err)
	}
	if a.Stream == "" || a.StreamSeq == 0 {
		return a, errors.New("max-deliveries advisory without stream or stream_seq")
	}
	return a, nil
}

// parkStranded moves the message an advisory names to the parked stream and
// deletes it from its work stream. It runs on the connection's dispatch
// goroutine, so it bounds its own time.
func (b *Bus) parkStranded(stream bus.Stream, data []byte) {
	a, err := parseMaxDeliveriesAdvisory(data)
	if err != nil {
		b.log.Warn("natsjs: ignoring an unreadable max-deliveries advisory", "err", err)
		return
	}
	if a.Stream != b.streamName(stream) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.moveToParked(ctx, stream, a); err != nil {
		b.log.Error("natsjs: a message reached the delivery limit but could not be parked; it stays in its stream, undelivered", "stream", string(stream), "seq", a.StreamSeq, "err", err)
	}
}

func (b *Bus) moveToParked(ctx context.Context, stream bus.Stream, a maxDeliveriesAdvisory) error {
	st, err := b.js.Stream(ctx, a.Stream)
	if err != nil {
		return fmt.Errorf("open stream %s: %w", a.Stream, err)
	}
	raw, err := st.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // settled after all, or parked by another process
	}
	if err != nil {
		return fmt.Errorf("read message %d: %w", a.StreamSeq, err)
	}
	h := parkHeaders(raw.Header, "delivery_limit", a.Deliveries, stream)
	// The same advisory seen twice (a reconnect) parks one copy.
	h.Set(nats.MsgIdHdr, fmt.Sprintf("%s-%d-delivery-limit", a.Stream, a.StreamSeq))
	pm := &nats.Msg{Subject: b.parkedSubject(), Data: raw.Data, Header: h}
	if _, err := b.js.PublishMsg(ctx, pm, jetstream.WithExpectStream(b.parkedStream())); err != nil {
		return fmt.Errorf("publish to %s: %w", b.parkedStream(), err)
	}
	if err := st.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("parked, but delete message %d from %s: %w; it is parked and stays undelivered in its stream", a.StreamSeq, a.Stream, err)
	}
	b.log.Warn("parked a message that reached the delivery limit (no worker settled it; does it crash the worker?)", "stream", string(stream), "seq", a.StreamSeq, "deliveries", a.Deliveries)
	return nil
}
