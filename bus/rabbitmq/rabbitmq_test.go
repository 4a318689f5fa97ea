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
	for _, x := range b.Exchanges() {
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			t.Errorf("cleanup: delete exchange %s: %v", x, err)
			return
		}
	}
}

func TestConformance(t *testing.T) {
	url := testenv.RabbitMQ(t)
	probe := openIsolated(t, url)
	t.Logf("RabbitMQ %s; Release counts as an attempt: %v", probe.ServerVersion(), probe.ReleaseCountsAttempt())
	bustest.Run(t, func(t *testing.T) bus.Bus { return openIsolated(t, url) }, bustest.Features{
		ReleaseCountsAttempt: probe.ReleaseCountsAttempt(),
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

// TestDeliveryLimitParks: a message that keeps coming back (as when it
// crashes every consumer) is moved to the parked queue by the broker, with a
// reason and its stream, and can be replayed from there.
func TestDeliveryLimitParks(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	ns := testenv.UniqueName("limit")
	b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers, DeliveryLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteTopology(t, url, b)
	})
	if !b.ReleaseCountsAttempt() {
		t.Skipf("RabbitMQ %s does not count Release (basic.nack) toward the delivery limit", b.ServerVersion())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	body := bustest.EventBody("listing", "poison", 1)
	if err := b.Publish(ctx, bus.Resync, bus.Message{Body: body}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Resync, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	start := time.Now()
	releases := 0
	for {
		select {
		case d := <-sub.Deliveries():
			if err := d.Release(ctx); err != nil {
				t.Fatal(err)
			}
			releases++
			continue
		case <-time.After(time.Second):
		}
		break
	}
	if releases != 3 {
		t.Errorf("message delivered %d times with delivery limit 2, want 3", releases)
	}
	parked, err := b.ListParked(ctx, bus.ParkedFilter{ReasonContains: "delivery_limit"})
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 {
		t.Fatalf("parked = %+v, want the poison message", parked)
	}
	p := parked[0]
	if string(p.Body) != string(body) || p.Stream != bus.Resync || p.ParkedAt.Before(start.Add(-time.Second)) || p.Attempts != 3 {
		t.Errorf("parked message = %+v (stream %s, parked at %v)", p, p.Stream, p.ParkedAt)
	}
	n, err := b.ReplayParked(ctx, bus.ParkedFilter{})
	if err != nil || n != 1 {
		t.Fatalf("ReplayParked = %d, %v", n, err)
	}
	select {
	case d := <-sub.Deliveries():
		if string(d.Body()) != string(body) || d.Attempt() != 1 {
			t.Errorf("replayed %q attempt %d, want the poison message at attempt 1", d.Body(), d.Attempt())
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("replayed message not delivered")
	}
}
