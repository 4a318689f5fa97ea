package rabbitmq_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/testenv"
)

// Each benchmark iteration moves batch messages of about 120 bytes through a
// quorum queue; msgs/s is the figure to compare. Raw* is plain amqp091-go,
// Bus* the adapter: the difference is the adapter's overhead.
const batch = 1000

func benchBody() []byte { return bustest.EventBody("listing", "bench-key-0001", 1) }

func openBaseline(b *testing.B, url string) (*rabbitmq.Baseline, string) {
	base, err := rabbitmq.OpenBaseline(url)
	if err != nil {
		b.Fatal(err)
	}
	queue := testenv.UniqueName("bench")
	if err := base.DeclareQuorumQueue(queue); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = base.DeleteQueue(queue)
		_ = base.Close()
	})
	return base, queue
}

func reportRate(b *testing.B, msgs int) {
	b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkRawPublishConfirm(b *testing.B) {
	url := testenv.RabbitMQ(b)
	base, queue := openBaseline(b, url)
	ctx := context.Background()
	body := benchBody()
	n := 0
	for b.Loop() {
		if err := base.PublishConfirm(ctx, queue, batch, body); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	reportRate(b, n)
}

func BenchmarkBusPublish(b *testing.B) {
	url := testenv.RabbitMQ(b)
	bs := openIsolated(b, url)
	ctx := context.Background()
	msgs := make([]bus.Message, batch)
	for i := range msgs {
		msgs[i] = bus.Message{Body: benchBody()}
	}
	n := 0
	for b.Loop() {
		if err := bs.Publish(ctx, bus.Live, msgs...); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	reportRate(b, n)
}

func BenchmarkRawConsumeAck(b *testing.B) {
	url := testenv.RabbitMQ(b)
	base, queue := openBaseline(b, url)
	ctx := context.Background()
	body := benchBody()
	n := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := base.PublishConfirm(ctx, queue, batch, body); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := base.ConsumeAck(ctx, queue, batch, 200); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	reportRate(b, n)
}

func BenchmarkBusConsumeAck(b *testing.B) {
	url := testenv.RabbitMQ(b)
	bs := openIsolated(b, url)
	ctx := context.Background()
	msgs := make([]bus.Message, batch)
	for i := range msgs {
		msgs[i] = bus.Message{Body: benchBody()}
	}
	n := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := bs.Publish(ctx, bus.Live, msgs...); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		sub, err := bs.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 200})
		if err != nil {
			b.Fatal(err)
		}
		for range batch {
			d := <-sub.Deliveries()
			if err := d.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if err := sub.Close(); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	reportRate(b, n)
}

// BenchmarkBusPublishSingle measures one message per Publish call: the
// latency of one confirm round trip, the cost a relay pays per event.
func BenchmarkBusPublishSingle(b *testing.B) {
	url := testenv.RabbitMQ(b)
	bs := openIsolated(b, url)
	ctx := context.Background()
	m := bus.Message{Body: benchBody()}
	for b.Loop() {
		if err := bs.Publish(ctx, bus.Live, m); err != nil {
			b.Fatal(fmt.Errorf("publish: %w", err))
		}
	}
}
