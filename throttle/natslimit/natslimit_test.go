package natslimit_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/limitertest"
	"github.com/eventsync/eventsync/throttle/natslimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformanceExternal(t *testing.T) {
	l := newExternal(t)
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

func FuzzLimiter(f *testing.F) {
	l := newExternal(f)
	limitertest.Fuzz(f, func(*testing.T) throttle.Limiter { return l })
}

// newExternal opens a limiter on the test NATS server in a bucket of its
// own, deleted when the test ends.
func newExternal(tb testing.TB) *natslimit.Limiter {
	url := testenv.NATS(tb)
	bucket := testenv.UniqueName("nl")
	l, err := natslimit.Open(context.Background(), natslimit.Config{URL: url, Bucket: bucket})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nc, err := nats.Connect(url)
		if err == nil {
			if js, err := nc.JetStream(); err == nil {
				_ = js.DeleteKeyValue(bucket + "_throttle")
			}
			nc.Close()
		}
		_ = l.Close()
	})
	return l
}

func TestConformanceEmbedded(t *testing.T) {
	ctx := context.Background()
	srv, err := embedded.Start(ctx, embedded.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	l, err := natslimit.Open(ctx, natslimit.Config{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []natslimit.Config{{}, {URL: "nats://x", Bucket: "a.b"}, {URL: "nats://x", Replicas: 9}} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
