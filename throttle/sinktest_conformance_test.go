package throttle_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/sink/sinktest"
	"github.com/eventsync/eventsync/throttle"
)

// throttle.Sink is a transparent decorator: around the HTTP sink and the
// fake API it passes the port's suite, failures included, because it hands
// every failure back as the wrapped sink returned it (a 429 or an outage
// holds the calls that follow, not the one that failed).
func TestSinkConformance(t *testing.T) {
	sinktest.Run(t, func(t *testing.T) sinktest.Env {
		api, err := fakeapi.Start(context.Background(), fakeapi.Config{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = api.Close() })
		s, err := throttle.New(newScenarioSink(t, api.URL), throttle.Config{}, throttle.Options{Name: "api", Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		return sinktest.Env{Sink: s, Entity: "listing", Faults: sinktest.FakeAPIFaults(t, api.Server)}
	})
}
