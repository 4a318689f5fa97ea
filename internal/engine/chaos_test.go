package engine

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/natsjs"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/pglimit"
)

// TestWorkersConvergeThroughPausesAndOutages runs three workers of one
// process over both streams while a chaos loop pauses and resumes each
// stream and takes the API down for moments, and events arrive duplicated
// and out of order on either stream. Whatever the interleaving, every key
// must end at its newest version: a worker that stops pulling for good (a
// slot or the breaker's probe held by an idle stream, a delivery never
// settled) fails it.
func TestWorkersConvergeThroughPausesAndOutages(t *testing.T) {
	t.Run("rabbitmq", func(t *testing.T) {
		testConvergeThroughChaos(t, rabbitmqtest.Open(t, rabbitmq.Config{}), false, 0)
	})
	// Every live event held for a debounce window first, through the same
	// pauses (a pause hands back what waits) and outages.
	t.Run("rabbitmq-debounced", func(t *testing.T) {
		testConvergeThroughChaos(t, rabbitmqtest.Open(t, rabbitmq.Config{}), false, 150*time.Millisecond)
	})
	// As eventsync worker runs by default: each worker behind its own
	// throttle, the three sharing one budget in the PostgreSQL store.
	t.Run("rabbitmq-throttled", func(t *testing.T) {
		testConvergeThroughChaos(t, rabbitmqtest.Open(t, rabbitmq.Config{}), true, 0)
	})
	t.Run("nats", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := natsjs.Open(ctx, natsjs.Config{URL: testenv.NATS(t), Namespace: testenv.UniqueName("chaos"), AckWait: 5 * time.Second})
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
		testConvergeThroughChaos(t, b, false, 0)
	})
}

var chaosSinkTimeout = 5 * time.Second

func testConvergeThroughChaos(t *testing.T, b bus.Bus, throttled bool, debounce time.Duration) {
	sf := stores()[0]
	h := newHarnessTimeout(t, sf, chaosSinkTimeout, nil)
	// 2% of the writes land but answer only after the sink's deadline: their
	// outcome is unknown to the worker, which must not let an older event
	// of the key through until the newer write's retry has landed.
	if err := h.api.SetFaults(fakeapi.Faults{ErrorRate: 0.05, Latency: fakeapi.Duration(time.Millisecond), Jitter: fakeapi.Duration(3 * time.Millisecond),
		TimeoutRate: 0.02, TimeoutHold: fakeapi.Duration(chaosSinkTimeout + time.Second)}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var limiter throttle.Limiter
	if throttled {
		pg, ok := h.store.(*postgres.Store)
		if !ok {
			t.Fatalf("the throttled variant needs the PostgreSQL store, got %T", h.store)
		}
		schema := testenv.UniqueName("chaos")
		lim, err := pglimit.New(ctx, pg.Pool(), schema)
		if err != nil {
			t.Fatal(err)
		}
		limiter = lim
		t.Cleanup(func() {
			_ = lim.Close()
			if _, err := pg.Pool().Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	api := h.applier.sink
	for i := range 3 {
		if throttled {
			ts, err := throttle.New(api, throttle.Config{ProbeInterval: 300 * time.Millisecond}, throttle.Options{
				Name: "chaos/sink", Limiter: limiter, Owner: fmt.Sprintf("chaos-%d", i), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			h.applier.sink = ts // runWorker builds the worker on it
		}
		runWorker(t, h, b, func(c *Config) {
			c.WorkerID = fmt.Sprintf("chaos-%d", i)
			c.Concurrency = 1 + i*8 // 1, 9 and 17 slots: one worker is always full
			c.LockedRetryDelay = 50 * time.Millisecond
			c.BackoffBase, c.BackoffMax = 50*time.Millisecond, 500*time.Millisecond
			c.Breaker = BreakerConfig{Failures: 4, OpenFor: 100 * time.Millisecond, MaxOpenFor: 400 * time.Millisecond}
			if debounce > 0 {
				c.Debounce = map[string]time.Duration{DebounceAny: debounce}
			}
		})
	}

	// The first versions go to either stream, the last ones to live only:
	// by then resync is idle, as it is most of the time in production.
	const keys, versions, mixed = 100, 6, 4
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var msgs [2][]bus.Message
	var tail []bus.Message
	for k := range keys {
		for v := 1; v <= versions; v++ {
			for range 1 + rng.IntN(2) { // some events twice
				m := bus.Message{Body: upsert(fmt.Sprintf("c%d", k), int64(v), fmt.Sprintf("v%d", v))}
				if v > mixed {
					tail = append(tail, m)
					continue
				}
				s := rng.IntN(2)
				msgs[s] = append(msgs[s], m)
			}
		}
	}
	for s := range msgs {
		rng.Shuffle(len(msgs[s]), func(i, j int) { msgs[s][i], msgs[s][j] = msgs[s][j], msgs[s][i] })
	}
	rng.Shuffle(len(tail), func(i, j int) { tail[i], tail[j] = tail[j], tail[i] })
	msgs[0] = append(msgs[0], tail...)

	stop := make(chan struct{})
	var chaos sync.WaitGroup
	chaos.Go(func() {
		streams := []bus.Stream{bus.Live, bus.Resync}
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rng.IntN(300)) * time.Millisecond):
			}
			switch rng.IntN(3) {
			case 0:
				h.api.StartOutage(time.Duration(100+rng.IntN(500)) * time.Millisecond)
			default:
				s := streams[rng.IntN(2)]
				if err := control.SetPaused(ctx, h.store, s, rng.IntN(2) == 0, "chaos", ""); err != nil {
					t.Errorf("pause %s: %v", s, err)
				}
			}
		}
	})
	for i := 0; i < max(len(msgs[0]), len(msgs[1])); i += 20 {
		for s, stream := range []bus.Stream{bus.Live, bus.Resync} {
			if i < len(msgs[s]) {
				if err := b.Publish(ctx, stream, msgs[s][i:min(i+20, len(msgs[s]))]...); err != nil {
					t.Fatal(err)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	chaos.Wait()
	h.api.StartOutage(0)
	for _, s := range []bus.Stream{bus.Live, bus.Resync} {
		if err := control.SetPaused(ctx, h.store, s, false, "chaos", ""); err != nil {
			t.Fatal(err)
		}
	}

	var behind []string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := map[string]string{}
		for _, r := range h.api.Records("listings") {
			got[r.ExternalID()], _ = r["title"].(string)
		}
		behind = behind[:0]
		for k := range keys {
			key := fmt.Sprintf("c%d", k)
			if got[key] != fmt.Sprintf("v%d", versions) {
				behind = append(behind, fmt.Sprintf("%s=%q", key, got[key]))
			}
		}
		if len(behind) == 0 {
			break
		}
		if time.Now().After(deadline) {
			live, _ := b.Stats(ctx, bus.Live)
			resync, _ := b.Stats(ctx, bus.Resync)
			var stacks bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			states := map[string]string{}
			_ = h.store.Scan(ctx, "listing", func(k store.Key, st store.State) error {
				states[k.Key] = fmt.Sprintf("applied=%d repair=%v remote=%s intent=%v", st.AppliedVersion, st.RepairNeeded, st.RemoteID, st.Intent != nil)
				return nil
			})
			for _, b := range behind {
				key, _, _ := strings.Cut(b, "=")
				t.Logf("%s: store %s", b, states[key])
			}
			st := h.api.Stats()
			t.Fatalf("%d keys not at version %d a minute after the chaos: %v; bus %+v %+v; %s; API stale writes %d, overlapping %d, faults %v\n%s",
				len(behind), versions, behind, live, resync, parkedSummary(ctx, b), st.StaleWrites, st.OverlappingWrites, st.FaultsInjected, stacks.String())
		}
	}
	// A create that outlived its lease (a lost lease is repaired by the
	// next holder) may leave a duplicate for a moment; the repair removes it.
	for deadline := time.Now().Add(30 * time.Second); h.api.Stats().DuplicateRecords != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d duplicate records 30 s after convergence", h.api.Stats().DuplicateRecords)
		}
	}
	// Converging is not enough: on the way no two writes of one key may
	// overlap, and no older event may be written over a newer one (it
	// would regress the record until the newer write's retry landed).
	// Every event is valid: waiting (a paused stream, a leased key, an
	// outage) must never get one parked.
	if p := parkedSummary(ctx, b); p != "nothing parked" {
		t.Errorf("%s, want nothing parked", p)
	}
	st := h.api.Stats()
	if st.OverlappingWrites != 0 {
		t.Errorf("overlapping writes on one entity: %d", st.OverlappingWrites)
	}
	if st.StaleWrites != 0 {
		t.Errorf("stale writes (a record's version went down): %d", st.StaleWrites)
	}
}

// parkedSummary says how many messages the bus parked and why, with a few
// of their bodies.
func parkedSummary(ctx context.Context, b bus.Bus) string {
	parked, err := b.ListParked(ctx, bus.ParkedFilter{})
	if err != nil {
		return "parked messages unknown: " + err.Error()
	}
	if len(parked) == 0 {
		return "nothing parked"
	}
	reasons := map[string]int{}
	var bodies []string
	for _, p := range parked {
		reasons[p.Reason]++
		if len(bodies) < 3 {
			bodies = append(bodies, fmt.Sprintf("%s after %d attempts: %.120s", p.Stream, p.Attempts, p.Body))
		}
	}
	return fmt.Sprintf("%d parked, by reason %v, e.g. %s", len(parked), reasons, strings.Join(bodies, "; "))
}
