package eventsync_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
)

// gatedCRM holds every create until open is closed.
type gatedCRM struct {
	*crm
	open chan struct{}
}

func (g *gatedCRM) Create(ctx context.Context, r sink.Record) (string, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	return g.crm.Create(ctx, r)
}

// queueGauges reads the queue metrics of the live stream from reg; a
// metric that is absent reads -1.
func queueGauges(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, name := range []string{"eventsync_queue_ready", "eventsync_queue_unacked", "eventsync_queue_delayed", "eventsync_queue_consumers", "eventsync_parked_messages", "eventsync_queue_stats_up"} {
		out[name] = -1
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			stream := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "stream" {
					stream = l.GetValue()
				}
			}
			if stream == "" || stream == string(bus.Live) {
				out[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// The queue-depth metrics a worker exports follow the backlog on a real
// RabbitMQ: what waits, what the worker holds unacknowledged (prefetched
// beyond what it works on), and what is parked.
func TestQueueMetricsFollowTheBacklog(t *testing.T) {
	ns := testenv.UniqueName("queuemetrics")
	b := rabbitmqtest.Open(t, rabbitmq.Config{URL: testenv.RabbitMQ(t), Namespace: ns})
	api := &gatedCRM{crm: newCRM(), open: make(chan struct{})}
	reg := prometheus.NewRegistry()
	cfg := eventsync.Config{Store: testenv.Redis(t), Namespace: ns}
	cfg.Worker.Concurrency, cfg.Worker.Prefetch, cfg.Worker.Streams = 2, 6, []string{"live"}
	client, err := eventsync.Open(cfg, eventsync.WithBus(b), eventsync.WithSink(api),
		eventsync.WithRegisterer(reg), eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := client.NewWorker(ctx, eventsync.WithWorkerID("queuemetrics"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		body, err := event.Event{ID: fmt.Sprint(i), Entity: "contact", Key: fmt.Sprint(i), Version: 1, Op: event.OpUpsert, Data: []byte(`{}`)}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, bus.Live, bus.Message{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	eventually := func(what string, cond func(g map[string]float64) bool) {
		t.Helper()
		var g map[string]float64
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if g = queueGauges(t, reg); cond(g) {
				return
			}
		}
		t.Fatalf("%s: not within 30s; metrics %v", what, g)
	}
	eventually("the backlog waits, nothing unacked, nothing parked", func(g map[string]float64) bool {
		return g["eventsync_queue_stats_up"] == 1 && g["eventsync_queue_ready"] == n && g["eventsync_queue_unacked"] == 0 &&
			g["eventsync_queue_consumers"] == 0 && g["eventsync_parked_messages"] == 0 && g["eventsync_queue_delayed"] == 0
	})

	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	// Two events wait on the API; the worker holds its prefetch of six.
	eventually("the worker holds its prefetch unacknowledged", func(g map[string]float64) bool {
		return g["eventsync_queue_ready"] == n-6 && g["eventsync_queue_unacked"] == 6 && g["eventsync_queue_consumers"] == 1
	})
	close(api.open)
	eventually("the backlog applied", func(g map[string]float64) bool {
		return g["eventsync_queue_ready"] == 0 && g["eventsync_queue_unacked"] == 0
	})
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte("not an event")}); err != nil {
		t.Fatal(err)
	}
	eventually("the invalid message parked", func(g map[string]float64) bool {
		return g["eventsync_parked_messages"] == 1 && g["eventsync_queue_ready"] == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
