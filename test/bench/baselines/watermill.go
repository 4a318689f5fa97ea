package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// existingQueue is a TopologyBuilder for a queue someone else declared
// (here eventsync's bus adapter, with quorum and dead-letter arguments a
// plain declare would contradict): it only checks that the queue exists.
type existingQueue struct{}

func (existingQueue) BuildTopology(ch *amqp.Channel, p wamqp.BuildTopologyParams, _ wamqp.Config, _ watermill.LoggerAdapter) error {
	_, err := ch.QueueDeclarePassive(p.QueueName, true, false, false, false, nil)
	return err
}

func (existingQueue) ExchangeDeclare(*amqp.Channel, string, wamqp.Config) error { return nil }

// watermillPost drains the queue through a Watermill router whose handler
// POSTs each message to the API. A watermill-amqp subscription hands over
// one message at a time and waits for its ack, so the router gets one
// handler (one subscription, one AMQP channel) per unit of concurrency:
// how a Watermill consumer reaches the same number of events in flight.
func watermillPost(ctx context.Context, o options) error {
	cfg := wamqp.NewDurableQueueConfig(o.amqpURL)
	cfg.TopologyBuilder = existingQueue{}
	if o.prefetch > 0 { // else the library's default (1)
		cfg.Consume.Qos.PrefetchCount = o.prefetch
	}
	logger := watermill.NopLogger{}
	sub, err := wamqp.NewSubscriber(cfg, logger)
	if err != nil {
		return fmt.Errorf("watermill subscriber: %w", err)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, logger)
	if err != nil {
		return fmt.Errorf("watermill router: %w", err)
	}

	p := newPoster(o.api, o.concurrency)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var settled atomic.Int64
	var once sync.Once
	handle := func(msg *message.Message) error {
		if err := p.post(msg.Context(), msg.Payload); err != nil {
			// No retry: with every fault of the fake API off a failure is a
			// broken run, not something to ride out.
			cancel(err)
			return err
		}
		if settled.Add(1) == o.n {
			once.Do(func() {
				reportDone()
				cancel(nil)
			})
		}
		return nil
	}
	for i := range o.concurrency {
		router.AddNoPublisherHandler(fmt.Sprintf("post-%d", i), o.queue, sub, handle)
	}

	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	select {
	case <-ctx.Done():
	case err := <-runErr:
		_ = sub.Close()
		return fmt.Errorf("router stopped early: %w", err)
	}
	// The router acks a message after its handler returns; give the last
	// acks a moment to reach the subscriptions and the broker before
	// closing them, or a closing subscription would nack (requeue) an acked
	// message (see closeAfterAcks).
	time.Sleep(500 * time.Millisecond)
	closeErr := errors.Join(router.Close(), <-runErr, sub.Close())
	if settled.Load() < o.n {
		return fmt.Errorf("after %d of %d events: %w", settled.Load(), o.n, context.Cause(ctx))
	}
	return closeErr
}
