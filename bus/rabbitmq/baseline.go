package rabbitmq

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Baseline is plain amqp091-go with no eventsync logic: the yardstick the
// adapter's (and the engine's) benchmarks report beside their own numbers.
// It talks to quorum queues like the adapter does. It is not meant for
// production use.
type Baseline struct {
	conn *amqp.Connection
	ch   *amqp.Channel // confirm mode
}

// OpenBaseline connects to url and opens one confirm-mode channel.
func OpenBaseline(url string) (*Baseline, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, explainDialError(url, err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("baseline: open confirm channel: %w", err)
	}
	return &Baseline{conn: conn, ch: ch}, nil
}

// DeclareQuorumQueue declares a durable quorum queue.
func (b *Baseline) DeclareQuorumQueue(name string) error {
	_, err := b.ch.QueueDeclare(name, true, false, false, false, quorumArgs())
	return err
}

// DeleteQueue deletes a queue and its messages.
func (b *Baseline) DeleteQueue(name string) error {
	_, err := b.ch.QueueDelete(name, false, false, false)
	return err
}

// PublishConfirm publishes n persistent copies of body to queue through the
// default exchange, all pipelined, and waits for every confirm.
func (b *Baseline) PublishConfirm(ctx context.Context, queue string, n int, body []byte) error {
	confirms := make([]*amqp.DeferredConfirmation, 0, n)
	for range n {
		dc, err := b.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: body,
		})
		if err != nil {
			return fmt.Errorf("baseline publish: %w", err)
		}
		confirms = append(confirms, dc)
	}
	for _, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("baseline confirm: %w", err)
		}
		if !ok {
			return errors.New("baseline publish: broker nacked")
		}
	}
	return nil
}

// ConsumeAck consumes n messages from queue on a fresh channel with
// Qos(prefetch) and acks each one individually, then cancels.
func (b *Baseline) ConsumeAck(ctx context.Context, queue string, n, prefetch int) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return fmt.Errorf("baseline consume: %w", err)
	}
	defer func() { _ = ch.Close() }()
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return fmt.Errorf("baseline consume: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("baseline consume: %w", err)
	}
	for range n {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("baseline consume: channel closed")
			}
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("baseline ack: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close closes the connection.
func (b *Baseline) Close() error { return b.conn.Close() }

// RawPublishConfirm is the publish baseline in one call: it connects,
// publishes n persistent copies of body to the (existing) queue with
// pipelined confirms, and disconnects.
func RawPublishConfirm(ctx context.Context, url, queue string, n int, body []byte) error {
	b, err := OpenBaseline(url)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	return b.PublishConfirm(ctx, queue, n, body)
}

// RawConsumeAck is the consume baseline in one call: it connects, consumes
// and acks n messages from queue with the given prefetch, and disconnects.
func RawConsumeAck(ctx context.Context, url, queue string, n, prefetch int) error {
	b, err := OpenBaseline(url)
	if err != nil {
		return err
	}
	defer func() { _ = b.Close() }()
	return b.ConsumeAck(ctx, queue, n, prefetch)
}
