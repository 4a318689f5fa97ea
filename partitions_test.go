package eventsync

import (
	"context"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/testenv"
)

func TestValidateBusPartitions(t *testing.T) {
	for _, n := range []int{-1, 1025} {
		err := Config{BusPartitions: n}.Validate()
		if err == nil || !strings.Contains(err.Error(), "bus_partitions") {
			t.Errorf("bus_partitions %d: Validate = %v, want an error naming bus_partitions", n, err)
		}
	}
	if err := (Config{BusPartitions: 8}).Validate(); err != nil {
		t.Errorf("bus_partitions 8: %v", err)
	}
}

// With NATS, ordered mode needs pinned priority groups (nats-server 2.11+):
// an older server refuses it at open, naming the setting and the version.
func TestBusPartitionsWithNATS(t *testing.T) {
	url := testenv.NATS(t)
	ns := testenv.UniqueName("clientordered")
	c, err := Open(Config{Bus: url, Namespace: ns, BusPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := c.Bus(context.Background())
	if err != nil {
		if !strings.Contains(err.Error(), "bus_partitions") || !strings.Contains(err.Error(), "2.11") {
			t.Fatalf("Bus = %v, want a bus_partitions error naming nats-server 2.11", err)
		}
		return
	}
	nb, ok := b.(*natsjs.Bus)
	if !ok {
		t.Fatalf("bus is %T", b)
	}
	_ = nb.DeleteStreams(context.Background())
}

// The Client hands bus_partitions to the RabbitMQ bus.
func TestBusPartitionsReachRabbitMQ(t *testing.T) {
	url := testenv.RabbitMQ(t)
	ns := testenv.UniqueName("clientordered")
	c, err := Open(Config{Bus: url, Namespace: ns, BusPartitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := c.Bus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rb, ok := b.(*rabbitmq.Bus)
	if !ok {
		t.Fatalf("bus is %T", b)
	}
	t.Cleanup(func() {
		// Switching back to the default mode removes the empty partitions.
		plain, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		queues, exchanges := plain.Queues(), plain.Exchanges()
		_ = plain.Close()
		conn, err := amqp.Dial(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, x := range exchanges {
			_ = ch.ExchangeDelete(x, false, false)
		}
	})
	if rb.Partitions() != 3 {
		t.Errorf("Partitions = %d, want 3", rb.Partitions())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
