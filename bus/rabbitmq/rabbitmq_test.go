package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTiers keep the suite fast: bustest retries with a one-second delay.
var testTiers = []time.Duration{time.Second, 5 * time.Second}

// openIsolated opens a bus on its own namespace and deletes its queues and
// exchange when the test ends.
func openIsolated(t testing.TB, url string) *rabbitmq.Bus {
	t.Helper()
	ns := testenv.UniqueName("bustest")
	b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteTopology(t, url, b)
	})
	return b
}

func deleteTopology(t testing.TB, url string, b *rabbitmq.Bus) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, q := range b.Queues() {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("cleanup: delete queue %s: %v", q, err)
			return
		}
	}
	if err := ch.ExchangeDelete(b.Namespace(), false, false); err != nil {
		t.Errorf("cleanup: delete exchange %s: %v", b.Namespace(), err)
	}
}

func TestConformance(t *testing.T) {
	url := testenv.RabbitMQ(t)
	bustest.Run(t, func(t *testing.T) bus.Bus { return openIsolated(t, url) }, bustest.Features{
		ReleaseCountsAttempt: true,
		RetryDelay:           time.Second,
	})
}
