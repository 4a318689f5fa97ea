package rabbitmq_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/internal/testenv"
)

// openOrdered opens a bus in ordered mode on its own namespace (or ns).
func openOrdered(t testing.TB, url, ns string, partitions int) *rabbitmq.Bus {
	t.Helper()
	if ns == "" {
		ns = testenv.UniqueName("ordered")
	}
	b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers, Partitions: partitions})
	if err != nil {
		t.Fatalf("Open with %d partitions: %v", partitions, err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		deleteTopology(t, url, b)
	})
	return b
}

// The whole port contract holds in ordered mode: retries and parked
// messages come back through the partitions.
func TestConformanceOrdered(t *testing.T) {
	url := testenv.RabbitMQ(t)
	probe := openOrdered(t, url, "", 3)
	bustest.Run(t, func(t *testing.T) bus.Bus { return openOrdered(t, url, "", 3) }, bustest.Features{
		ReleaseCountsAttempt: probe.ReleaseCountsAttempt(),
		RetryDelay:           time.Second,
		Partitions:           3,
	})
}

type seen struct {
	key     string
	version int64
}

func decode(t testing.TB, body []byte) seen {
	var e struct {
		Entity  string `json:"entity"`
		Key     string `json:"key"`
		Version int64  `json:"version"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return seen{e.Entity + ":" + e.Key, e.Version}
}

// interleaved publishes versions 1..versions of keys k0..k<keys-1>, keys
// interleaved, in batches.
func interleaved(t testing.TB, ctx context.Context, b bus.Publisher, keys, versions int) {
	t.Helper()
	var msgs []bus.Message
	for v := 1; v <= versions; v++ {
		for k := range keys {
			msgs = append(msgs, bus.Message{Body: bustest.EventBody("listing", fmt.Sprintf("k%d", k), int64(v))})
		}
	}
	if err := b.Publish(ctx, bus.Live, msgs...); err != nil {
		t.Fatal(err)
	}
}

// TestOrderedOneKeyInOrder: with several partitions and a consumer that
// settles out of order (acks in parallel), every key's versions arrive in
// publish order, and a retried one returns to its own partition: the key's
// later versions keep arriving on the same subscription after it.
func TestOrderedOneKeyInOrder(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	b := openOrdered(t, url, "", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const keys, versions = 20, 15
	interleaved(t, ctx, b, keys, versions)
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	last := map[string]int64{}
	retried := false
	var wg sync.WaitGroup
	defer wg.Wait()
	for got := 0; got < keys*versions; {
		select {
		case d := <-sub.Deliveries():
			e := decode(t, d.Body())
			if e.key == "listing:k3" && e.version == 5 && !retried {
				// Retried: it comes back through its partition later.
				retried = true
				if err := d.Retry(ctx, time.Second, "test"); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if e.key == "listing:k3" && e.version == 5 {
				if d.Headers()[bus.HeaderPartitionKey] != "listing:k3" {
					t.Errorf("retried copy has partition key %q", d.Headers()[bus.HeaderPartitionKey])
				}
			} else if e.version != last[e.key]+1 && !(e.key == "listing:k3" && e.version == 6 && last[e.key] == 4) {
				t.Errorf("%s: version %d after %d", e.key, e.version, last[e.key])
			}
			if e.version > last[e.key] {
				last[e.key] = e.version
			}
			got++
			wg.Add(1)
			go func() { // settle out of order
				defer wg.Done()
				if err := d.Ack(ctx); err != nil {
					t.Error(err)
				}
			}()
		case <-ctx.Done():
			t.Fatalf("timed out; last versions %v", last)
		}
	}
	st, err := b.Stats(ctx, bus.Live)
	if err != nil {
		t.Fatal(err)
	}
	if st.Consumers != 1 {
		t.Errorf("Stats consumers = %d, want 1 (one subscription)", st.Consumers)
	}
}

// TestOrderedSwitchNeedsDrainedQueues: switching a namespace between the
// competing-consumers mode and ordered mode (or to fewer partitions) is
// refused while the old queues hold messages, naming the setting, and
// cleans up the old queues once they are empty.
func TestOrderedSwitchNeedsDrainedQueues(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plain := openIsolated(t, url)
	ns := plain.Namespace()
	if err := plain.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 1)}); err != nil {
		t.Fatal(err)
	}
	_, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers, Partitions: 2})
	if err == nil || !strings.Contains(err.Error(), "bus_partitions") || !strings.Contains(err.Error(), ns+".live") {
		t.Fatalf("ordered Open over a non-empty default queue = %v, want an error naming bus_partitions and the queue", err)
	}
	drain(t, ctx, plain, 1)
	ordered := openOrdered(t, url, ns, 3)
	if err := ordered.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 2)}); err != nil {
		t.Fatalf("publish in ordered mode after the switch: %v", err)
	}
	st, err := ordered.Stats(ctx, bus.Live)
	if err != nil || st.Ready != 1 {
		t.Fatalf("ordered stats = %+v, %v; want the one message (and no copy in the old queue)", st, err)
	}
	// Back to the default mode, or to fewer partitions: refused while the
	// message waits in a partition queue.
	for _, n := range []int{0, 1} {
		_, err = rabbitmq.Open(ctx, rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers, Partitions: n})
		if err == nil || !strings.Contains(err.Error(), "bus_partitions is "+fmt.Sprint(n)) {
			t.Fatalf("Open with %d partitions over a non-empty partition = %v, want a bus_partitions error", n, err)
		}
	}
	drain(t, ctx, ordered, 1)
	back, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers})
	if err != nil {
		t.Fatalf("back to the default mode after draining: %v", err)
	}
	defer func() { _ = back.Close() }()
	if err := back.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "1", 3)}); err != nil {
		t.Fatal(err)
	}
	st, err = back.Stats(ctx, bus.Live)
	if err != nil || st.Ready != 1 {
		t.Fatalf("stats back in the default mode = %+v, %v; want one message", st, err)
	}
	drain(t, ctx, back, 1)
}

func drain(t *testing.T, ctx context.Context, b bus.Bus, n int) {
	t.Helper()
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: n})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	for range n {
		select {
		case d := <-sub.Deliveries():
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("drain: timed out")
		}
	}
}

// helperEnv makes the test binary a consumer process (see
// TestOrderedConsumerProcess).
const helperEnv = "EVENTSYNC_ORDERED_CONSUMER"

// TestOrderedConsumerProcess is not a test: run by
// TestOrderedFailoverToOtherProcess as a separate process, it consumes the
// live stream of the namespace in $EVENTSYNC_ORDERED_CONSUMER, acking
// each delivery and printing "got <key> <version>" after its ack.
func TestOrderedConsumerProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("helper process for TestOrderedFailoverToOtherProcess")
	}
	var ns string
	var partitions int
	if _, err := fmt.Sscanf(spec, "%s %d", &ns, &partitions); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := rabbitmq.Open(ctx, rabbitmq.Config{URL: testenv.RabbitMQ(t), Namespace: ns, RetryTiers: testTiers, Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("subscribed")
	for d := range sub.Deliveries() {
		e := decode(t, d.Body())
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("got %s %d\n", e.key, e.version)
	}
}

// TestOrderedFailoverToOtherProcess: a worker process is active on every
// partition; this process waits as the standby consumer. Killing the
// worker (SIGKILL: no cancel, no close) hands its partitions to this one,
// which receives every event the killed one did not ack, each key's in
// order.
func TestOrderedFailoverToOtherProcess(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	b := openOrdered(t, url, "", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOrderedConsumerProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d", helperEnv, b.Namespace(), 4))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
	}()
	lines := bufio.NewScanner(out)
	expect := func(prefix string) string {
		for lines.Scan() {
			if strings.HasPrefix(lines.Text(), prefix) {
				return lines.Text()
			}
		}
		t.Fatalf("consumer process ended before printing %q: %v", prefix, lines.Err())
		return ""
	}
	expect("subscribed")
	// The standby subscribes second: the broker keeps the process active.
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	const keys, versions = 8, 30
	interleaved(t, ctx, b, keys, versions)
	acked := map[string]int64{}
	for range 20 {
		var key string
		var v int64
		if _, err := fmt.Sscanf(expect("got "), "got %s %d", &key, &v); err != nil {
			t.Fatal(err)
		}
		acked[key] = v
	}
	select {
	case d := <-sub.Deliveries():
		t.Fatalf("standby got %q while the active consumer lives", d.Body())
	default:
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	// It printed more acks than we read before the kill: read on to
	// the end of its output (Wait would close the pipe before).
	for lines.Scan() {
		var key string
		var v int64
		if _, err := fmt.Sscanf(lines.Text(), "got %s %d", &key, &v); err == nil {
			acked[key] = v
		}
	}
	_ = cmd.Wait()
	next := map[string]int64{}
	remaining := 0
	for k := range keys {
		key := fmt.Sprintf("listing:k%d", k)
		next[key] = acked[key] + 1
		remaining += versions - int(acked[key])
	}
	for remaining > 0 {
		select {
		case d := <-sub.Deliveries():
			e := decode(t, d.Body())
			// A delivery acked by the killed process just before it
			// died may be counted twice, never skipped or reordered.
			if e.version > next[e.key] || e.version < next[e.key]-1 {
				t.Errorf("standby got %s version %d, want %d", e.key, e.version, next[e.key])
			}
			if e.version == next[e.key] {
				next[e.key]++
				remaining--
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatalf("standby did not take over: %d events missing (next %v)", remaining, next)
		}
	}
}

// TestOrderedWorkersSplitPartitions: the first subscriber is active on
// every partition; a second one joins and rebalancing hands it a share, so
// both receive events, each key from one of them at a time, and every
// key's versions reach each of them in order.
func TestOrderedWorkersSplitPartitions(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	ns := testenv.UniqueName("split")
	open := func() *rabbitmq.Bus {
		b, err := rabbitmq.Open(context.Background(), rabbitmq.Config{URL: url, Namespace: ns, RetryTiers: testTiers, Partitions: 4, RebalanceInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	a, b := open(), open()
	t.Cleanup(func() { deleteTopology(t, url, a) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subA, err := a.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = subA.Close() }()
	subB, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = subB.Close() }()

	const keys = 16
	last := map[string]map[string]int64{"a": {}, "b": {}} // consumer → key → version
	for round := int64(1); ; round++ {
		if ctx.Err() != nil {
			t.Fatal("the second subscriber never got a share of the partitions")
		}
		var msgs []bus.Message
		for k := range keys {
			msgs = append(msgs, bus.Message{Body: bustest.EventBody("listing", fmt.Sprintf("k%d", k), round)})
		}
		if err := a.Publish(ctx, bus.Live, msgs...); err != nil {
			t.Fatal(err)
		}
		by := map[string]string{} // key → consumer, this round
		for range keys {
			var d bus.Delivery
			var who string
			select {
			case d = <-subA.Deliveries():
				who = "a"
			case d = <-subB.Deliveries():
				who = "b"
			case <-ctx.Done():
				t.Fatalf("round %d: timed out", round)
			}
			e := decode(t, d.Body())
			if e.version <= last[who][e.key] {
				t.Errorf("%s got %s version %d after %d", who, e.key, e.version, last[who][e.key])
			}
			last[who][e.key] = e.version
			by[e.key] = who
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if round == 1 {
			continue
		}
		counts := map[string]int{}
		for _, who := range by {
			counts[who]++
		}
		if counts["a"] > 0 && counts["b"] > 0 {
			t.Logf("round %d: keys split %v", round, counts)
			return
		}
	}
}

// TestOrderedReplayRoutesByTheReplayedBody: a parked event replayed with an
// edited body goes to the partition of the key the body names.
func TestOrderedReplayRoutesByTheReplayedBody(t *testing.T) {
	t.Parallel()
	url := testenv.RabbitMQ(t)
	b := openOrdered(t, url, "", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Publish(ctx, bus.Live, bus.Message{Body: bustest.EventBody("listing", "old", 1)}); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	next := func() bus.Delivery {
		select {
		case d := <-sub.Deliveries():
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
			return nil
		}
	}
	d := next()
	if got := d.Headers()[bus.HeaderPartitionKey]; got != "listing:old" {
		t.Errorf("published with partition key %q, want listing:old", got)
	}
	if err := d.Park(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil || len(parked) != 1 {
		t.Fatalf("parked = %v, %v", parked, err)
	}
	if err := b.ReplayParkedAs(ctx, parked[0].ID, bustest.EventBody("listing", "new", 1)); err != nil {
		t.Fatal(err)
	}
	d = next()
	if got := d.Headers()[bus.HeaderPartitionKey]; got != "listing:new" {
		t.Errorf("replayed with partition key %q, want listing:new", got)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
}
