package natsjs

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
)

// shared is one embedded server for the package's tests; each bus gets its
// own namespace on it. It proves the bus works with nothing installed.
var shared *embedded.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natsjs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shared, err = embedded.Start(context.Background(), embedded.Config{DataDir: dir, Logger: quiet()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.Shutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// features declares the honest difference: a Release is a JetStream Nak,
// which the server counts as a delivery.
var features = bustest.Features{ReleaseCountsAttempt: true}

func openIsolated(t testing.TB, cfg Config) *Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Namespace = testenv.UniqueName("es")
	cfg.Logger = quiet()
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.DeleteStreams(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = b.Close()
	})
	return b
}

func embeddedBus(t testing.TB) *Bus {
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return openIsolated(t, Config{Conn: nc})
}

func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	bustest.Run(t, func(t *testing.T) bus.Bus { return embeddedBus(t) }, features)
}

func TestConformanceExternal(t *testing.T) {
	t.Parallel()
	url := testenv.NATS(t)
	bustest.Run(t, func(t *testing.T) bus.Bus { return openIsolated(t, Config{URL: url}) }, features)
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no url":        {},
		"bad namespace": {URL: "nats://x", Namespace: "a.b"},
		"replicas":      {URL: "nats://x", Replicas: 9},
		"ack wait":      {URL: "nats://x", AckWait: time.Millisecond},
		"max deliver":   {URL: "nats://x", MaxDeliver: -2},
		"max deliver 1": {URL: "nats://x", MaxDeliver: 1},
	} {
		if err := cfg.WithDefaults().Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := (Config{URL: "nats://x"}).WithDefaults().Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	t.Parallel()
	_, err := Open(context.Background(), Config{URL: "nats://127.0.0.1:1", Logger: quiet()})
	if err == nil || !strings.Contains(err.Error(), "is it running") || setting.Key(err) != "bus" {
		t.Fatalf("open of an unreachable server: got %v (setting %q), want an error asking whether it runs, about the bus", err, setting.Key(err))
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSurvivesServerRestart stops the server under a running subscription
// and starts it again on the same port and data directory: the queued
// message survives, the client reconnects by itself, and the same
// subscription keeps delivering.
func TestSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	dir, port := t.TempDir(), freePort(t)
	start := func() *embedded.Server {
		srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Port: port, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := start()
	b, err := Open(ctx, Config{URL: srv.ClientURL(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := func() bus.Delivery {
		t.Helper()
		select {
		case d := <-sub.Deliveries():
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
		}
		return nil
	}
	first := next()
	if string(first.Body()) != "before" {
		t.Fatalf("got %q", first.Body())
	}
	// Unsettled across the restart: it must come back, not be lost.
	srv.Shutdown()
	srv = start()
	defer srv.Shutdown()
	for {
		err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte("after")})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publish after restart never succeeded: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = first.Release(ctx) // may fail: the server restarted meanwhile
	got := map[string]bool{}
	for !got["before"] || !got["after"] {
		d := next()
		got[string(d.Body())] = true
		if err := d.Ack(ctx); err != nil {
			t.Fatalf("ack after restart: %v", err)
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	bb := embeddedBus(b)
	ctx := context.Background()
	msgs := make([]bus.Message, 100)
	for i := range msgs {
		msgs[i] = bus.Message{Body: bustest.EventBody("listing", fmt.Sprint(i), 1)}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := bb.Publish(ctx, bus.Live, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkConsumeAck(b *testing.B) {
	bb := embeddedBus(b)
	ctx := context.Background()
	const prefetch = 256
	sub, err := bb.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: prefetch})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	body := bustest.EventBody("listing", "1", 1)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		msgs := make([]bus.Message, 100)
		for i := range msgs {
			msgs[i] = bus.Message{Body: body}
		}
		if err := bb.Publish(ctx, bus.Live, msgs...); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		// Acks run concurrently, as the engine settles in parallel.
		errs := make(chan error, len(msgs))
		for range msgs {
			d := <-sub.Deliveries()
			go func() { errs <- d.Ack(ctx) }()
		}
		for range msgs {
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "msgs/s")
}

// TestUnsettledCountsDelayedRetries proves Unsettled sees what Stats' Ready
// does not: a message waiting for a delayed retry is neither ready nor in a
// consumer's hands, yet not applied either.
func TestUnsettledCountsDelayedRetries(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b := embeddedBus(t)
	unsettled := func() int64 {
		t.Helper()
		n, err := b.Unsettled(ctx, bus.Live)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"n":1}`)}, bus.Message{Body: []byte(`{"n":2}`)}); err != nil {
		t.Fatal(err)
	}
	if n := unsettled(); n != 2 {
		t.Fatalf("Unsettled after publishing 2 = %d", n)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	for i := 0; i < 2; i++ {
		d := <-sub.Deliveries()
		if i == 0 {
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := d.Retry(ctx, time.Minute, "test"); err != nil {
			t.Fatal(err)
		}
	}
	// The retried copy is ready until the subscription's first pull of it
	// hands it back until due; from then on only Unsettled sees it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := b.Stats(ctx, bus.Live)
		if err != nil {
			t.Fatal(err)
		}
		if st.Ready == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready = %d with the only unacked message delayed", st.Ready)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The server removes an acked message right after confirming the ack,
	// so give it a moment; the delayed one must never be missed.
	deadline = time.Now().Add(5 * time.Second)
	for n := unsettled(); n != 1; n = unsettled() {
		if n < 1 || time.Now().After(deadline) {
			t.Fatalf("Unsettled = %d with one message waiting for a delayed retry, want 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.Unsettled(ctx, "nope"); err == nil {
		t.Fatal("Unsettled of an unknown stream succeeded")
	}
}

// A message no worker settles (here: released every time, as a worker that
// crashes on it would leave it) stops at MaxDeliver and is moved to the
// parked stream with reason "delivery_limit", out of the work stream.
func TestMaxDeliveriesParksTheMessage(t *testing.T) {
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b := openIsolated(t, Config{Conn: nc, MaxDeliver: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"poison":true}`)}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	releaseDeliveries(ctx, t, sub, 3)
	waitParkedAtLimit(ctx, t, b, 3)
	select {
	case d := <-sub.Deliveries():
		t.Fatalf("delivered again after the limit: %s", d.Body())
	case <-time.After(300 * time.Millisecond):
	}
}

// releaseDeliveries takes n deliveries from sub and releases each.
func releaseDeliveries(ctx context.Context, t *testing.T, sub bus.Subscription, n int) {
	t.Helper()
	for i := range n {
		select {
		case d := <-sub.Deliveries():
			if err := d.Release(ctx); err != nil {
				t.Fatalf("release %d: %v", i+1, err)
			}
		case <-ctx.Done():
			t.Fatalf("delivery %d never came", i+1)
		}
	}
}

// waitParkedAtLimit waits until the poison message is parked with reason
// delivery_limit after attempts deliveries and gone from the live stream
// (parked first, deleted right after).
func waitParkedAtLimit(ctx context.Context, t *testing.T, b *Bus, attempts int) {
	t.Helper()
	for {
		parked, err := b.ListParked(ctx, bus.ParkedFilter{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := b.Unsettled(ctx, bus.Live)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) == 1 && n == 0 {
			if p := parked[0]; p.Reason != "delivery_limit" || p.Attempts != attempts || string(p.Body) != `{"poison":true}` || p.Stream != bus.Live {
				t.Fatalf("parked %+v, want the message with reason delivery_limit after %d deliveries", p, attempts)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("parked %d, live stream holds %d: want the message parked and gone from its stream", len(parked), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// A message can reach the delivery limit while no bus process is ready to
// park it (the one whose pull found it over the limit was killed, or the
// parker was busy elsewhere): the stored advisory lets the next process
// park it.
func TestAStrandedMessageIsParkedByTheNextProcess(t *testing.T) {
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ns := testenv.UniqueName("es")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := Open(ctx, Config{Conn: nc, Namespace: ns, MaxDeliver: 2, Logger: quiet(), withoutParker: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := first.DeleteStreams(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := first.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"poison":true}`)}); err != nil {
		t.Fatal(err)
	}
	sub, err := first.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	releaseDeliveries(ctx, t, sub, 2)
	// The server announces the limit on the pull after the last release.
	for {
		st, err := first.js.Stream(ctx, first.advisoryStream())
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().State.Msgs == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no max-deliveries advisory was stored")
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = sub.Close()
	_ = first.Close()

	second, err := Open(ctx, Config{Conn: nc, Namespace: ns, MaxDeliver: 2, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	waitParkedAtLimit(ctx, t, second, 2)
}

// A retry is no failed delivery: it republishes the message and acks the
// original, so an event that waits (a key locked for a while, a paused
// stream) is retried far more often than MaxDeliver and is never parked as
// if it crashed every worker. Its copy, handed back only by crashes or
// releases, still stops at the limit.
func TestRetriesDoNotCountTowardsTheDeliveryLimit(t *testing.T) {
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b := openIsolated(t, Config{Conn: nc, MaxDeliver: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"poison":true}`), Headers: map[string]string{"trace-id": "t"}}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := func(what string) bus.Delivery {
		t.Helper()
		select {
		case d := <-sub.Deliveries():
			return d
		case <-time.After(5 * time.Second):
			parked, _ := b.ListParked(ctx, bus.ParkedFilter{})
			t.Fatalf("%s never came (parked: %+v)", what, parked)
		}
		return nil
	}
	const retries = 10 // more than MaxDeliver
	for attempt := 1; attempt <= retries; attempt++ {
		d := next(fmt.Sprintf("delivery %d", attempt))
		if d.Attempt() != attempt || d.Headers()["trace-id"] != "t" {
			t.Fatalf("delivery %d: Attempt() = %d, headers %v", attempt, d.Attempt(), d.Headers())
		}
		if err := d.Retry(ctx, 20*time.Millisecond, "key locked"); err != nil {
			t.Fatalf("retry %d: %v", attempt, err)
		}
	}
	// The copy now crashes every worker (released, never settled): two
	// deliveries, as its first early one was handed back until due.
	d := next("the retried copy")
	if d.Attempt() != retries+1 || d.Headers()[bus.HeaderRetryReason] != "key locked" {
		t.Fatalf("after %d retries: Attempt() = %d, headers %v", retries, d.Attempt(), d.Headers())
	}
	if err := d.Release(ctx); err != nil {
		t.Fatal(err)
	}
	releaseDeliveries(ctx, t, sub, 1)
	waitParkedAtLimit(ctx, t, b, retries+2)
}
