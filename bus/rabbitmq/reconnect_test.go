package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/testenv"
)

// tcpProxy forwards to the broker and can cut every connection on demand,
// which looks to the client exactly like a network failure.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   []net.Conn
	refuse  bool
	wg      sync.WaitGroup
	accepts int
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.accepts++
		p.mu.Unlock()
		if refuse {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *tcpProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// cut drops every open connection and refuses new ones for down.
func (p *tcpProxy) cut(down time.Duration) {
	p.mu.Lock()
	p.refuse = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	time.AfterFunc(down, func() {
		p.mu.Lock()
		p.refuse = false
		p.mu.Unlock()
	})
}

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.cut(0)
	p.wg.Wait()
}

func (p *tcpProxy) url(t *testing.T, brokerURL string) string {
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// TestReconnectLosesNothing cuts the connection twice while a publisher and
// a consumer are running: every publish eventually succeeds, every message
// is consumed at least once, and a delivery from the dead channel reports
// ErrDeliveryLost and comes again.
func TestReconnectLosesNothing(t *testing.T) {
	t.Parallel()
	brokerURL := testenv.RabbitMQ(t)
	u, _ := url.Parse(brokerURL)
	proxy := newTCPProxy(t, u.Host)
	ns := testenv.UniqueName("reconnect")
	b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{
		URL: proxy.url(t, brokerURL), Namespace: ns, RetryTiers: testTiers,
		ReconnectMaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteTopology(t, brokerURL, b)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// One message held unsettled across the cut.
	held := bus.Message{Body: bustest.EventBody("listing", "held", 1)}
	if err := b.Publish(ctx, bus.Live, held); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 20})
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer func() { _ = sub.Close() }()
	var first bus.Delivery
	select {
	case first = <-sub.Deliveries():
	case <-ctx.Done():
		t.Fatal("no first delivery")
	}

	const n = 400
	seen := make(chan string, 4*n)
	consumerDone := make(chan struct{})
	go func() {
		defer close(consumerDone)
		for d := range sub.Deliveries() {
			_ = d.Ack(ctx) // an ack lost with the channel means a redelivery
			seen <- string(d.Body())
		}
	}()

	publishErr := make(chan error, 1)
	go func() {
		for i := range n {
			m := bus.Message{Body: bustest.EventBody("listing", fmt.Sprint(i), 1)}
			if err := b.Publish(ctx, bus.Live, m); err != nil {
				publishErr <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		publishErr <- nil
	}()

	time.Sleep(200 * time.Millisecond)
	proxy.cut(time.Second)
	// Settling a delivery of the dead channel fails, and says why.
	time.Sleep(100 * time.Millisecond)
	if err := first.Ack(ctx); !errors.Is(err, rabbitmq.ErrDeliveryLost) {
		t.Errorf("Ack on a dead channel = %v, want ErrDeliveryLost", err)
	}
	time.Sleep(1500 * time.Millisecond)
	proxy.cut(300 * time.Millisecond)

	if err := <-publishErr; err != nil {
		t.Fatalf("publishing across reconnects: %v", err)
	}
	want := map[string]bool{string(held.Body): true}
	for i := range n {
		want[string(bustest.EventBody("listing", fmt.Sprint(i), 1))] = true
	}
	for len(want) > 0 {
		select {
		case body := <-seen:
			delete(want, body)
		case <-ctx.Done():
			t.Fatalf("%d of %d messages never consumed after reconnects", len(want), n+1)
		}
	}
	proxy.mu.Lock()
	accepts := proxy.accepts
	proxy.mu.Unlock()
	if accepts < 3 {
		t.Errorf("proxy saw %d connections; the test did not exercise reconnecting", accepts)
	}
	_ = sub.Close()
	<-consumerDone
}

// A connection closed without an AMQP error (amqp091-go delivers a nil
// *amqp.Error then) is replaced like a lost one, and logging it does not
// crash the process: the watcher used to hand the logger that typed nil as
// the error, and eventsync's redacting handler called its Error method
// (found by scripts/stress.sh, a panic at a bus's Close).
func TestAConnectionClosedWithoutAnErrorIsReplaced(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	logger := redact.Logger(slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &mu}, nil)))
	b := rabbitmqtest.Open(t, rabbitmq.Config{Logger: logger})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rabbitmq.CloseConnection(ctx, b); err != nil {
		t.Fatal(err)
	}
	// The watcher reconnects; a publish then goes through.
	for {
		err := b.Publish(ctx, bus.Live, bus.Message{Body: []byte(`{"id":"e-1","entity":"listing","key":"k","version":1,"op":"upsert","data":{}}`)})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no publish went through after the connection was closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "closed without a reason from the broker") {
		t.Errorf("log does not say the connection closed without a reason:\n%s", logged.String())
	}
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
