package rabbitmq

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus"
)

// The parked queue is read with basic.get without auto-ack: a scanned
// message stays unacknowledged (invisible to other readers) until the scan
// acks it (replayed, purged) or requeues it (listed, not matching). Two
// scans running at once therefore each see only part of the queue.

// parkedMessage decodes the diagnosis headers Park wrote. Messages the
// broker dead-lettered (delivery limit) carry its x-death headers instead.
func (t topology) parkedMessage(d amqp.Delivery) bus.ParkedMessage {
	pm := bus.ParkedMessage{ID: d.MessageId, Body: d.Body, Attempts: 1, Headers: make(map[string]string, len(d.Headers))}
	for k, v := range d.Headers {
		if s, ok := v.(string); ok {
			pm.Headers[k] = s
		} else {
			pm.Headers[k] = fmt.Sprint(v)
		}
	}
	// Our attempt header only: x-delivery-count here counts listings.
	if n, ok := toInt(d.Headers[bus.HeaderAttempt]); ok && n >= 1 && n <= 1<<30 {
		pm.Attempts = n
	}
	// x-death lists the broker's dead-letterings, most recent first.
	var death amqp.Table
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		death, _ = deaths[0].(amqp.Table)
	}
	if s, ok := d.Headers[bus.HeaderStream].(string); ok {
		pm.Stream = bus.Stream(s)
	} else if q, ok := death["queue"].(string); ok {
		pm.Stream, _ = t.streamOfQueue(q)
	}
	if s, ok := d.Headers[bus.HeaderReason].(string); ok {
		pm.Reason = s
	} else if r, ok := death["reason"].(string); ok {
		pm.Reason = "dead-lettered by RabbitMQ: " + r
		if r == "delivery_limit" {
			pm.Reason += fmt.Sprintf(" (returned to its queue more than %d times; consumers may be crashing on it)", t.deliveryLimit)
			pm.Attempts += t.deliveryLimit
		}
	}
	if s, ok := d.Headers[bus.HeaderParkedAt].(string); ok {
		if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
			pm.ParkedAt = at
		}
	} else if at, ok := death["time"].(time.Time); ok {
		pm.ParkedAt = at
	}
	return pm
}

// parkedScan walks the parked queue once on its own channel.
type parkedScan struct {
	ch       *amqp.Channel
	queue    string
	lastKept uint64 // highest delivery tag left unacked, to requeue at the end
}

func (b *Bus) startScan(ctx context.Context, what string) (*parkedScan, error) {
	ch, err := b.conn.channel(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s parked messages: %w", what, err)
	}
	return &parkedScan{ch: ch, queue: b.topo.parkedQueue()}, nil
}

// next returns the next message not yet seen by this scan.
func (s *parkedScan) next(ctx context.Context) (amqp.Delivery, bool, error) {
	if err := ctx.Err(); err != nil {
		return amqp.Delivery{}, false, err
	}
	d, ok, err := s.ch.Get(s.queue, false)
	if err != nil {
		return amqp.Delivery{}, false, fmt.Errorf("read parked queue %s: %w", s.queue, err)
	}
	return d, ok, nil
}

func (s *parkedScan) keep(d amqp.Delivery) { s.lastKept = max(s.lastKept, d.DeliveryTag) }

// finish requeues every kept message and closes the channel (which would
// requeue them too; the explicit nack makes it prompt).
func (s *parkedScan) finish() error {
	var err error
	if s.lastKept > 0 {
		err = s.ch.Nack(s.lastKept, true, true)
	}
	if cerr := s.ch.Close(); err == nil && cerr != nil && !s.ch.IsClosed() {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("return scanned messages to %s: %w (closing the channel returns them anyway)", s.queue, err)
	}
	return nil
}

// ListParked returns matching parked messages without removing them.
func (b *Bus) ListParked(ctx context.Context, f bus.ParkedFilter) ([]bus.ParkedMessage, error) {
	scan, err := b.startScan(ctx, "list")
	if err != nil {
		return nil, err
	}
	var out []bus.ParkedMessage
	for f.Limit <= 0 || len(out) < f.Limit {
		d, ok, err := scan.next(ctx)
		if err != nil {
			_ = scan.finish()
			return nil, fmt.Errorf("list parked messages: %w", err)
		}
		if !ok {
			break
		}
		scan.keep(d)
		if pm := b.topo.parkedMessage(d); f.Match(pm) {
			out = append(out, pm)
		}
	}
	if err := scan.finish(); err != nil {
		return nil, fmt.Errorf("list parked messages: %w", err)
	}
	return out, nil
}

// replayBatch bounds how many replayed messages wait for confirms at once.
const replayBatch = 256

// ReplayParked republishes matching messages to their original stream with
// confirms, and only then removes them from the parked queue. Replayed
// messages start again at attempt 1. Messages without a valid stream header
// (not parked by eventsync) are left in place.
func (b *Bus) ReplayParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	scan, err := b.startScan(ctx, "replay")
	if err != nil {
		return 0, err
	}
	replayed := 0
	type replay struct {
		d      amqp.Delivery
		stream bus.Stream
	}
	var batch []replay
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		out := make([]outgoing, len(batch))
		now := time.Now()
		for i, r := range batch {
			out[i] = b.replayOf(r.d, r.d.Body, r.stream, now)
		}
		if err := b.pub.publish(ctx, out); err != nil {
			return err
		}
		for _, r := range batch {
			if err := r.d.Ack(false); err != nil {
				// Replayed but still parked: a later replay duplicates it,
				// which versions absorb.
				return fmt.Errorf("remove replayed message from %s: %w", scan.queue, err)
			}
			replayed++
		}
		batch = batch[:0]
		return nil
	}
	for f.Limit <= 0 || replayed+len(batch) < f.Limit {
		d, ok, err := scan.next(ctx)
		if err != nil {
			_ = scan.finish()
			return replayed, fmt.Errorf("replay parked messages: %w", err)
		}
		if !ok {
			break
		}
		pm := b.topo.parkedMessage(d)
		if _, serr := bus.ParseStream(string(pm.Stream)); serr != nil || !f.Match(pm) {
			scan.keep(d)
			continue
		}
		batch = append(batch, replay{d: d, stream: pm.Stream})
		if len(batch) == replayBatch {
			if err := flush(); err != nil {
				_ = scan.finish()
				return replayed, fmt.Errorf("replay parked messages: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		_ = scan.finish()
		return replayed, fmt.Errorf("replay parked messages: %w", err)
	}
	return replayed, scan.finish()
}

// replayOf is the message that replays the parked d to stream with body:
// its headers without the diagnosis, so it starts again at attempt 1. In
// ordered mode its partition key is taken from body again (an edited
// event may name another key; one parked in the competing-consumers mode
// has none).
func (b *Bus) replayOf(d amqp.Delivery, body []byte, stream bus.Stream, now time.Time) outgoing {
	h := copyHeaders(d.Headers)
	for _, k := range []string{bus.HeaderReason, bus.HeaderParkedAt, bus.HeaderAttempt, bus.HeaderRetryReason, bus.HeaderStream} {
		delete(h, k)
	}
	if key := bus.PartitionKey(bus.Message{Body: body}); key != "" {
		delete(h, bus.HeaderPartitionKey)
	}
	b.setPartitionKey(h, bus.Message{Body: body})
	msg := persistent(body, h, now)
	if d.ContentType != "" {
		msg.ContentType = d.ContentType
	}
	return outgoing{exchange: b.topo.exchange(), key: string(stream), msg: msg}
}

// ReplayParkedAs republishes the parked message id with body to its
// original stream, with confirm, and only then removes it from the parked
// queue. A message another scan holds at that moment (a listing running
// at once) is not seen, and the answer is bus.ErrNotParked.
func (b *Bus) ReplayParkedAs(ctx context.Context, id string, body []byte) error {
	scan, err := b.startScan(ctx, "replay")
	if err != nil {
		return err
	}
	for {
		d, ok, err := scan.next(ctx)
		if err != nil {
			_ = scan.finish()
			return fmt.Errorf("replay parked message %s: %w", id, err)
		}
		if !ok {
			if err := scan.finish(); err != nil {
				return err
			}
			return fmt.Errorf("replay parked message %s: %w", id, bus.ErrNotParked)
		}
		pm := b.topo.parkedMessage(d)
		if pm.ID != id {
			scan.keep(d)
			continue
		}
		if _, serr := bus.ParseStream(string(pm.Stream)); serr != nil {
			scan.keep(d)
			_ = scan.finish()
			return fmt.Errorf("replay parked message %s: it names no original stream (%q), so it stays parked", id, pm.Stream)
		}
		if err := b.pub.publish(ctx, []outgoing{b.replayOf(d, body, pm.Stream, time.Now())}); err != nil {
			scan.keep(d)
			_ = scan.finish()
			return fmt.Errorf("replay parked message %s: %w", id, err)
		}
		if err := d.Ack(false); err != nil {
			_ = scan.finish()
			return fmt.Errorf("replay parked message %s: replayed, but removing it from %s failed (purge it by id): %w", id, scan.queue, err)
		}
		return scan.finish()
	}
}

// PurgeParked deletes matching parked messages and returns how many.
func (b *Bus) PurgeParked(ctx context.Context, f bus.ParkedFilter) (int, error) {
	scan, err := b.startScan(ctx, "purge")
	if err != nil {
		return 0, err
	}
	purged := 0
	for f.Limit <= 0 || purged < f.Limit {
		d, ok, err := scan.next(ctx)
		if err != nil {
			_ = scan.finish()
			return purged, fmt.Errorf("purge parked messages: %w", err)
		}
		if !ok {
			break
		}
		if !f.Match(b.topo.parkedMessage(d)) {
			scan.keep(d)
			continue
		}
		if err := d.Ack(false); err != nil {
			_ = scan.finish()
			return purged, fmt.Errorf("purge parked messages: %w", err)
		}
		purged++
	}
	return purged, scan.finish()
}
