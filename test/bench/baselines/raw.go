package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// consume opens a connection and a channel with Qos(prefetch, by default
// the concurrency, as eventsync's worker.prefetch) and starts consuming
// the queue with manual acks.
func consume(ctx context.Context, o options) (*amqp.Connection, <-chan amqp.Delivery, error) {
	prefetch := o.prefetch
	if prefetch == 0 {
		prefetch = o.concurrency
	}
	conn, err := amqp.Dial(o.amqpURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(prefetch, 0, false)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.ConsumeWithContext(ctx, o.queue, "", false, false, false, false, nil)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("consume %s: %w", o.queue, err)
	}
	return conn, deliveries, nil
}

// rawAck acks n deliveries one by one from one goroutine: the broker's own
// rate for this queue, with no work per message.
func rawAck(ctx context.Context, o options) error {
	conn, deliveries, err := consume(ctx, o)
	if err != nil {
		return err
	}
	for i := int64(0); i < o.n; i++ {
		select {
		case d, ok := <-deliveries:
			if !ok {
				_ = conn.Close()
				return errors.New("deliveries closed by the broker")
			}
			if err := d.Ack(false); err != nil {
				_ = conn.Close()
				return fmt.Errorf("ack: %w", err)
			}
		case <-ctx.Done():
			_ = conn.Close()
			return ctx.Err()
		}
	}
	reportDone()
	return closeAfterAcks(conn)
}

// closeAfterAcks closes the connection once the last acks have had a moment
// to take effect. A quorum queue applies acks through its Raft log, and
// RabbitMQ may still hold some of a channel's acks back when the channel
// closes; those messages are then requeued (seen on this machine under
// load: a few dozen of 2,000). The run is timed up to "done", not to here.
func closeAfterAcks(conn *amqp.Connection) error {
	time.Sleep(500 * time.Millisecond)
	return conn.Close()
}

// rawPost runs concurrency goroutines over one channel's deliveries
// (prefetch = concurrency), each POSTing an event and acking it: the least
// any sync to this API can do, with nothing remembered between events.
func rawPost(ctx context.Context, o options) error {
	conn, deliveries, err := consume(ctx, o)
	if err != nil {
		return err
	}
	p := newPoster(o.api, o.concurrency)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var settled atomic.Int64
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Go(func() {
			for {
				var d amqp.Delivery
				var ok bool
				select {
				case d, ok = <-deliveries:
				case <-ctx.Done():
					return
				}
				if !ok {
					cancel(errors.New("deliveries closed by the broker"))
					return
				}
				if err := p.post(ctx, d.Body); err != nil {
					cancel(err)
					return
				}
				if err := d.Ack(false); err != nil {
					cancel(fmt.Errorf("ack: %w", err))
					return
				}
				if settled.Add(1) == o.n {
					reportDone()
					cancel(nil)
					return
				}
			}
		})
	}
	wg.Wait()
	closeErr := closeAfterAcks(conn)
	if settled.Load() < o.n {
		return fmt.Errorf("after %d of %d events: %w", settled.Load(), o.n, context.Cause(ctx))
	}
	return closeErr
}
