package eventsync_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/eventsync/eventsync"
	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/testenv"
)

// A worker's heartbeat, as stored for ctl and the console, carries its
// throttle (API calls in flight by stream, the concurrency limit) and the
// lag of the events it applied, on a real RabbitMQ and Redis.
func TestHeartbeatCarriesThrottleAndLag(t *testing.T) {
	ns := testenv.UniqueName("heartbeat")
	b := rabbitmqtest.Open(t, rabbitmq.Config{URL: testenv.RabbitMQ(t), Namespace: ns})
	api := &gatedCRM{crm: newCRM(), open: make(chan struct{})}
	cfg := eventsync.Config{Store: testenv.Redis(t), Namespace: ns}
	cfg.Worker.Concurrency, cfg.Worker.Streams = 4, []string{"live"}
	client, err := eventsync.Open(cfg, eventsync.WithBus(b), eventsync.WithSink(api), eventsync.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := client.Store(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w, err := client.NewWorker(ctx, eventsync.WithWorkerID("heartbeat-"+ns))
	if err != nil {
		t.Fatal(err)
	}
	occurred := time.Now().Add(-2 * time.Second)
	for i := range 3 {
		body, err := event.Event{ID: fmt.Sprint(i), Entity: "contact", Key: fmt.Sprint(i), Version: 1, Op: event.OpUpsert, Data: []byte(`{}`), OccurredAt: &occurred}.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, bus.Live, bus.Message{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	heartbeat := func(what string, cond func(s control.WorkerStatus) bool) control.WorkerStatus {
		t.Helper()
		var last []control.WorkerStatus
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if last, err = control.Workers(ctx, st); err != nil {
				t.Fatal(err)
			}
			for _, s := range last {
				if s.ID == "heartbeat-"+ns && cond(s) {
					return s
				}
			}
		}
		t.Fatalf("%s: not within 30s; heartbeats %+v", what, last)
		return control.WorkerStatus{}
	}
	// The API holds the three creates: they hold throttle slots.
	s := heartbeat("three API calls in flight", func(s control.WorkerStatus) bool {
		return s.Throttle != nil && s.Throttle.InFlight[bus.Live] == 3
	})
	if s.Throttle.Limit < 1 || s.Throttle.InFlight[bus.Resync] != 0 || s.Throttle.HeldUntil != nil || s.Throttle.Outage || s.Lag != nil {
		t.Errorf("throttle while the API holds the calls: %+v, lag %v", *s.Throttle, s.Lag)
	}
	close(api.open)
	s = heartbeat("the lag of three applied events", func(s control.WorkerStatus) bool { return s.Lag[bus.Live].Events == 3 })
	if l := s.Lag[bus.Live]; l.P50 < 2 || l.P99 < l.P50 || l.P99 > 60 || s.Throttle.InFlight[bus.Live] != 0 {
		t.Errorf("after the API answered: lag %+v, throttle %+v", l, *s.Throttle)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
