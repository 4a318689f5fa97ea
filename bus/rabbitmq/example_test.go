package rabbitmq_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
)

// Open a bus, publish an event and apply it: the whole life of a message.
func ExampleOpen() {
	ctx := context.Background()
	b, err := rabbitmq.Open(ctx, rabbitmq.Config{
		URL:        "amqp://guest:guest@127.0.0.1:5672/",
		Namespace:  "eventsync",
		RetryTiers: []time.Duration{time.Second, 30 * time.Second, 10 * time.Minute},
	})
	if err != nil {
		log.Fatal(err) // names the broker's host and what to check
	}
	defer func() { _ = b.Close() }()

	event := []byte(`{"id":"e1","entity":"listing","key":"42","version":1,"op":"upsert","data":{"name":"Sea view"}}`)
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: event}); err != nil {
		log.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	d := <-sub.Deliveries()
	fmt.Println(d.Attempt(), string(d.Body()) == string(event))
	// Applied: Ack. Remote API said 429: d.Retry(ctx, 30*time.Second, "429").
	// Remote said 422: d.Park(ctx, "422 name too long").
	_ = d.Ack(ctx)
}
