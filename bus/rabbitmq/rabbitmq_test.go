package rabbitmq_test

import (
	"context"
	"strings"
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

// TestUnroutablePublishIsAnError deletes the live queue behind the bus's
// back: the mandatory flag turns the silent drop into an error.
func TestUnroutablePublishIsAnError(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	b := openIsolated(t, url)
	base, err := rabbitmq.OpenBaseline(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = base.Close() }()
	if err := base.DeleteQueue(b.Namespace() + ".live"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = b.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 1)})
	if err == nil || !strings.Contains(err.Error(), "unroutable") {
		t.Fatalf("Publish to a deleted queue = %v, want an unroutable error", err)
	}
	// The resync stream is unaffected and the channel still works.
	if err := b.Publish(ctx, bus.Resync, bus.Message{Body: bustest.EventBody("listing", "1", 1)}); err != nil {
		t.Fatalf("Publish to resync after a bounce: %v", err)
	}
}

func TestOpenRejectsConflictingQueue(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	ns := testenv.UniqueName("conflict")
	base, err := rabbitmq.OpenBaseline(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = base.Close() }()
	// A classic queue squatting on the live queue's name.
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(ns+".live", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = base.DeleteQueue(ns + ".live") }()
	_, err = rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers})
	if err == nil {
		t.Fatal("Open accepted a conflicting queue")
	}
	if !strings.Contains(err.Error(), "different settings") || !strings.Contains(err.Error(), ns+".live") {
		t.Errorf("error does not explain the conflict: %v", err)
	}
	// Clean whatever Open declared before the conflict.
	for _, q := range []string{ns + ".parked", ns + ".resync"} {
		_ = base.DeleteQueue(q)
	}
	if ch2, err := conn.Channel(); err == nil {
		_ = ch2.ExchangeDelete(ns, false, false)
	}
}
