// Package rabbitmqtest opens RabbitMQ buses isolated per test (their own
// namespace on the shared broker) and deletes their topology afterwards, for
// tests of packages that use the RabbitMQ adapter.
package rabbitmqtest

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/testenv"
)

// FastTiers are short retry tiers so retries in tests come back quickly.
var FastTiers = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// Open returns a bus on the test RabbitMQ in a fresh namespace, with
// FastTiers unless cfg sets RetryTiers. The test is skipped (or failed in
// CI) when RabbitMQ is unreachable.
func Open(t testing.TB, cfg rabbitmq.Config) *rabbitmq.Bus {
	t.Helper()
	cfg.URL = testenv.RabbitMQ(t)
	if cfg.Namespace == "" {
		cfg.Namespace = testenv.UniqueName("test")
	}
	if cfg.RetryTiers == nil {
		cfg.RetryTiers = FastTiers
	}
	b, err := rabbitmq.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open RabbitMQ bus: %v", err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		queues := b.Queues()
		// Commands under test may open the same namespace with the default
		// retry tiers; learn those queue names too so nothing is left behind.
		if other, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: cfg.URL, Namespace: cfg.Namespace}); err == nil {
			queues = append(queues, other.Queues()...)
			_ = other.Close()
		}
		DeleteTopology(t, cfg.URL, b.Namespace(), queues)
	})
	return b
}

// DeleteTopology removes a namespace's queues and exchange.
func DeleteTopology(t testing.TB, url, namespace string, queues []string) {
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
	seen := map[string]bool{}
	for _, q := range queues {
		if seen[q] {
			continue
		}
		seen[q] = true
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("cleanup: delete queue %s: %v", q, err)
			return
		}
	}
	if err := ch.ExchangeDelete(namespace, false, false); err != nil {
		t.Errorf("cleanup: delete exchange %s: %v", namespace, err)
	}
}
