package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/relay"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/source"
)

// BenchmarkRelay relays 100,000 outbox rows from PostgreSQL to a RabbitMQ
// quorum queue with confirms, beside the raw amqp091-go baseline: the same
// number of same-sized persistent messages published with confirms in
// batches of the same size on one channel. The two alternate in four rounds
// of 25,000 so that load from other processes hits both alike. Run with
//
//	go test -run '^$' -bench BenchmarkRelay -benchtime 1x ./internal/relay/
func BenchmarkRelay(b *testing.B) {
	const rounds, perRound, batch = 4, 25_000, 500
	ctx := context.Background()
	pg := newPG(b)
	bb := rabbitmqtest.Open(b, rabbitmq.Config{Logger: quiet})

	// An event as the relay publishes it, for the baseline's body size.
	sample := source.Row{ID: 12345, Entity: "listing", Key: "12345", Version: 12345, Op: "upsert",
		Data: []byte(`{"id": 12345, "name": "listing 12345", "price": 12345, "city": "Lisbon"}`), Occurred: time.Now()}
	body, err := sample.Event().Marshal()
	if err != nil {
		b.Fatal(err)
	}
	base, err := rabbitmq.OpenBaseline(testenv.RabbitMQ(b))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = base.Close() }()
	queue := testenv.UniqueName("relay-baseline")
	if err := base.DeclareQuorumQueue(queue); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = base.DeleteQueue(queue) }()

	for b.Loop() {
		var baseline, relayed time.Duration
		for round := range rounds {
			t0 := time.Now()
			for range perRound / batch {
				if err := base.PublishConfirm(ctx, queue, batch, body); err != nil {
					b.Fatal(err)
				}
			}
			baseline += time.Since(t0)

			// The relay: from committed outbox rows to confirmed and marked sent.
			if _, err := pg.db.Exec(`INSERT INTO eventsync_outbox (entity, key, version, op, data)
				SELECT 'listing', i::text, i, 'upsert', jsonb_build_object('id', i, 'name', 'listing ' || i, 'price', i, 'city', 'Lisbon')
				FROM generate_series($1::int, $2::int) i`, round*perRound+1, (round+1)*perRound); err != nil {
				b.Fatal(err)
			}
			r, err := relay.New(pg.src, bb, relay.Config{BatchSize: batch, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			t0 = time.Now()
			go func() { done <- r.Run(rctx) }()
			for r.Stats().Published < perRound {
				time.Sleep(2 * time.Millisecond)
			}
			relayed += time.Since(t0)
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		relayRate := rounds * perRound / relayed.Seconds()
		baseRate := rounds * perRound / baseline.Seconds()
		b.ReportMetric(relayRate, "relay_events/s")
		b.ReportMetric(baseRate, "raw_events/s")
		b.ReportMetric(100*relayRate/baseRate, "relay_%_of_raw")
	}
}
