package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/bus"
)

// DefaultMaxDeliver is Config.MaxDeliver's default. Retries do not count
// (see retry.go): only a message delivered 30 times without a worker
// settling it (crashes, releases) reaches it.
const DefaultMaxDeliver = 30

// parkerConsumer is the durable consumer of the advisory stream that every
// bus process of a namespace shares, so one of them moves each stranded
// message.
const parkerConsumer = "eventsync-parker"

func (b *Bus) advisoryStream() string {
	return strings.ToUpper(b.cfg.Namespace) + "_ADVISORIES"
}

// maxDeliveriesSubject is the advisory subject of the stream's consumer,
// in ordered mode of all its partition consumers.
func (b *Bus) maxDeliveriesSubject(s bus.Stream) string {
	if b.cfg.Partitions > 0 {
		return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + b.streamName(s) + ".*"
	}
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + b.streamName(s) + "." + consumerName
}

// declareAdvisories creates the advisory stream and its shared consumer.
//
// A message that reached the consumer's MaxDeliver is no longer delivered
// but stays in the work-queue stream. When a pull finds it over the limit,
// the server announces it on the max-deliveries advisory subject; the
// namespace's advisory stream keeps that announcement until a bus process
// has moved the message to the parked stream with reason "delivery_limit",
// as the RabbitMQ broker does with its delivery limit. Kept, because
// advisories are fire-and-forget: one that came while the pulling process
// died, or a move cut short by a crash, is finished by the next process.
func (b *Bus) declareAdvisories(ctx context.Context) error {
	subjects := make([]string, 0, len(bus.Streams))
	for _, s := range bus.Streams {
		subjects = append(subjects, b.maxDeliveriesSubject(s))
	}
	if _, err := createStream(ctx, b.js, jetstream.StreamConfig{
		Name:        b.advisoryStream(),
		Description: "eventsync: max-deliveries advisories, kept until the message they name is parked",
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("natsjs: create stream %s: %w", b.advisoryStream(), err)
	}
	if _, err := b.js.CreateOrUpdateConsumer(ctx, b.advisoryStream(), jetstream.ConsumerConfig{
		Durable:     parkerConsumer,
		Description: "every eventsync bus process shares this consumer",
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     time.Minute,
		Replicas:    b.cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("natsjs: create consumer on %s: %w", b.advisoryStream(), err)
	}
	return nil
}

// watchMaxDeliveries starts moving the messages the stored advisories name.
func (b *Bus) watchMaxDeliveries(ctx context.Context) error {
	if b.cfg.MaxDeliver < 0 || b.cfg.withoutParker {
		return nil
	}
	cons, err := b.js.Consumer(ctx, b.advisoryStream(), parkerConsumer)
	if err != nil {
		return fmt.Errorf("natsjs: open consumer %s on %s: %w", parkerConsumer, b.advisoryStream(), err)
	}
	b.parker, err = cons.Consume(b.handleAdvisory,
		jetstream.PullMaxMessages(16), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(2*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			b.log.Debug("natsjs: advisory consumer", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("natsjs: consume %s: %w", b.advisoryStream(), err)
	}
	return nil
}

// handleAdvisory parks the message an advisory names and then acks the
// advisory; a failure leaves the advisory for a later try.
func (b *Bus) handleAdvisory(m jetstream.Msg) {
	a, err := parseMaxDeliveriesAdvisory(m.Data())
	stream, known := b.streamOfAdvisory(m.Subject())
	if err != nil || !known || a.Stream != b.streamName(stream) {
		b.log.Warn("natsjs: dropping an unreadable max-deliveries advisory", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.moveToParked(ctx, stream, a); err != nil {
		b.log.Error("natsjs: a message reached the delivery limit but could not be parked yet; retrying in 10s", "stream", string(stream), "seq", a.StreamSeq, "err", err)
		_ = m.NakWithDelay(10 * time.Second)
		return
	}
	if err := m.Ack(); err != nil {
		b.log.Debug("natsjs: ack of a handled advisory failed; it comes back and finds the message parked", "err", err)
	}
}

func (b *Bus) streamOfAdvisory(subject string) (bus.Stream, bool) {
	for _, s := range bus.Streams {
		prefix, ok := strings.CutSuffix(b.maxDeliveriesSubject(s), "*")
		if subject == b.maxDeliveriesSubject(s) || ok && strings.HasPrefix(subject, prefix) {
			return s, true
		}
	}
	return "", false
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
	h := parkHeaders(raw.Header, "delivery_limit", attemptOf(raw.Header, uint64(max(a.Deliveries, 0))), stream)
	// The same advisory handled twice (its ack was lost) parks one copy
	// within the parked stream's duplicate window.
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
