package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/fakeapi"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/postgres"
	"github.com/eventsync/eventsync/store/redis"
)

// harness is an Applier wired to a real store and the fake API through the
// real HTTP sink: the only simulated part is the third-party API, which is
// our own product (fakeapi).
type harness struct {
	api     *fakeapi.Running
	store   store.Store
	applier *Applier
}

type storeFactory struct {
	name string
	open func(t *testing.T) store.Store
}

func stores() []storeFactory {
	return []storeFactory{
		{"postgres", func(t *testing.T) store.Store {
			dsn := testenv.Postgres(t)
			schema := testenv.UniqueName("engine")
			st, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, Schema: schema, MaxConns: 8})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = st.Close()
				// A fresh connection: the test may have closed the store.
				conn, err := pgx.Connect(context.Background(), dsn)
				if err != nil {
					t.Errorf("cleanup: %v", err)
					return
				}
				defer conn.Close(context.Background())
				if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			return st
		}},
		{"redis", func(t *testing.T) store.Store {
			url := testenv.Redis(t)
			prefix := testenv.UniqueName("engine")
			st, err := redis.Open(context.Background(), redis.Config{URL: url, Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = st.Close()
				opts, err := goredis.ParseURL(url)
				if err != nil {
					t.Errorf("cleanup: %v", err)
					return
				}
				rdb := goredis.NewClient(opts)
				defer rdb.Close()
				ctx := context.Background()
				iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
				for iter.Next(ctx) {
					_ = rdb.Unlink(ctx, iter.Val()).Err()
				}
			})
			return st
		}},
	}
}

func newHarness(t *testing.T, sf storeFactory, mutate func(*Config)) *harness {
	return newHarnessTimeout(t, sf, 500*time.Millisecond, mutate)
}

func newHarnessTimeout(t *testing.T, sf storeFactory, sinkTimeout time.Duration, mutate func(*Config)) *harness {
	t.Helper()
	api, err := fakeapi.Start(context.Background(), fakeapi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	sinkCfg, err := httpsink.ParseConfig([]byte(fmt.Sprintf("defaults:\n  base_url: %s\n  timeout: %s\nentities:\n  listing:\n    collection: listings\n  broken:\n    collection: broken\n    create: {method: PATCH, path: /v1/broken}\n", api.URL, sinkTimeout)))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := httpsink.New(sinkCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.Close)
	st := sf.open(t)
	cfg := Config{WorkerID: "test", LeaseTTL: 2 * time.Second, Entities: []string{"listing", "broken"}, MaxAttempts: 5}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := NewApplier(st, sk, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{api: api, store: st, applier: a}
}

func upsert(key string, version int64, title string) []byte {
	return []byte(fmt.Sprintf(`{"id":"e-%s-%d","entity":"listing","key":%q,"version":%d,"op":"upsert","data":{"title":%q}}`, key, version, key, version, title))
}

func del(key string, version int64) []byte {
	return []byte(fmt.Sprintf(`{"id":"d-%s-%d","entity":"listing","key":%q,"version":%d,"op":"delete"}`, key, version, key, version))
}

func (h *harness) apply(t *testing.T, body []byte, attempt int) Outcome {
	t.Helper()
	return h.applier.Apply(context.Background(), body, attempt)
}

// applierOn is another worker's Applier, with the harness's sink and
// config, on st (the harness's store behind a fault).
func (h *harness) applierOn(t *testing.T, st store.Store) *Applier {
	t.Helper()
	a, err := NewApplier(st, h.applier.sink, h.applier.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (h *harness) remote(t *testing.T, key string) []fakeapi.Record {
	t.Helper()
	var out []fakeapi.Record
	for _, r := range h.api.Records("listings") {
		if r.ExternalID() == key {
			out = append(out, r)
		}
	}
	return out
}

func (h *harness) requests() int64 {
	var n int64
	for _, byStatus := range h.api.Stats().Requests {
		for _, c := range byStatus {
			n += c
		}
	}
	return n
}

func expect(t *testing.T, got Outcome, want Result) {
	t.Helper()
	if got.Result != want {
		t.Fatalf("outcome %s (%s, err %v), want %s", got.Result, got.Reason, got.Err, want)
	}
}

func forEachStore(t *testing.T, fn func(t *testing.T, sf storeFactory)) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			t.Parallel()
			fn(t, sf)
		})
	}
}

func TestApplyVersionsDecide(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		expect(t, h.apply(t, upsert("1", 2, "two"), 1), ResultApplied)
		expect(t, h.apply(t, upsert("1", 1, "one"), 1), ResultStale)
		expect(t, h.apply(t, upsert("1", 2, "two"), 1), ResultDuplicate)
		expect(t, h.apply(t, upsert("1", 5, "five"), 1), ResultApplied)
		recs := h.remote(t, "1")
		if len(recs) != 1 || recs[0]["title"] != "five" {
			t.Fatalf("remote %v", recs)
		}
		before := h.requests()
		expect(t, h.apply(t, upsert("1", 3, "three"), 1), ResultStale)
		if h.requests() != before {
			t.Fatal("a stale event called the API")
		}
		// A tombstone is versioned: older upserts do not resurrect.
		expect(t, h.apply(t, del("1", 6), 1), ResultApplied)
		expect(t, h.apply(t, upsert("1", 4, "four"), 1), ResultStale)
		if recs := h.remote(t, "1"); len(recs) != 0 {
			t.Fatalf("deleted entity resurrected: %v", recs)
		}
		expect(t, h.apply(t, upsert("1", 7, "seven"), 1), ResultApplied)
		if recs := h.remote(t, "1"); len(recs) != 1 || recs[0]["title"] != "seven" {
			t.Fatalf("re-create after delete: %v", recs)
		}
		// Delete of a key never seen: looked up (it may predate eventsync)
		// and its tombstone kept.
		expect(t, h.apply(t, del("2", 1), 1), ResultApplied)
		expect(t, h.apply(t, upsert("2", 1, "x"), 1), ResultDuplicate)
		// A record created outside eventsync is removed by a delete.
		if _, err := h.applier.sink.Create(context.Background(), recordOf(t, upsert("3", 1, "foreign"))); err != nil {
			t.Fatal(err)
		}
		expect(t, h.apply(t, del("3", 1), 1), ResultApplied)
		if recs := h.remote(t, "3"); len(recs) != 0 {
			t.Fatalf("foreign record not deleted: %v", recs)
		}
		if st := h.api.Stats(); st.DuplicateRecords != 0 || st.StaleWrites != 0 {
			t.Fatalf("detectors: %+v", st)
		}
	})
}

func TestApplyPoisonIsParked(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		for body, want := range map[string]string{
			`not json`: "not a JSON object",
			`{"id":"a","entity":"listing","key":"k","version":1,"op":"upsert"}`:           `"data": required`,
			`{"id":"a","entity":"booking","key":"k","version":1,"op":"upsert","data":{}}`: `unknown entity type "booking"`,
			`{"id":"a","entity":"listing","key":"k","version":"2","op":"delete"}`:         "not a string",
		} {
			out := h.apply(t, []byte(body), 1)
			expect(t, out, ResultParked)
			if !strings.Contains(out.Reason, want) {
				t.Errorf("%s: reason %q lacks %q", body, out.Reason, want)
			}
		}
		big := upsert("k", 1, strings.Repeat("x", 2048))
		h2 := newHarness(t, sf, func(c *Config) { c.MaxEventBytes = 1024 })
		if out := h2.apply(t, big, 1); out.Result != ResultParked || !strings.Contains(out.Reason, "over the 1024-byte limit") {
			t.Fatalf("oversize: %+v", out)
		}
	})
}

func TestApplyCreateAmbiguousTimeoutDoesNotDuplicate(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		// Every write lands, then its response is held past the client's
		// 500ms deadline: the worst case for a non-idempotent create.
		if err := h.api.SetFaults(fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(2 * time.Second)}); err != nil {
			t.Fatal(err)
		}
		out := h.apply(t, upsert("7", 1, "first"), 1)
		expect(t, out, ResultRetried)
		if !out.SinkFailure {
			t.Fatal("timeout not counted as a sink failure")
		}
		if n := len(h.remote(t, "7")); n != 1 {
			t.Fatalf("the timed-out create should have landed once, found %d", n)
		}
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("7", 1, "first"), 2), ResultApplied)
		recs := h.remote(t, "7")
		if len(recs) != 1 {
			t.Fatalf("retry after an ambiguous create made %d records", len(recs))
		}
		var posts int64
		for _, n := range h.api.Stats().Requests["POST"] {
			posts += n
		}
		if posts != 1 {
			t.Fatalf("second create issued: %v", h.api.Stats().Requests)
		}
	})
}

func TestApplyCrashAfterCreateBeforeCommitReconciles(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		ctx := context.Background()
		// Simulate a worker that recorded its intent, created the record and
		// died before committing: its lease simply expires.
		k := store.Key{Entity: "listing", Key: "9"}
		if _, _, err := h.store.Acquire(ctx, k, "crashed-worker", time.Second, 1); err != nil {
			t.Fatal(err)
		}
		if _, err := h.applier.sink.Create(ctx, recordOf(t, upsert("9", 1, "one"))); err != nil {
			t.Fatal(err)
		}
		// While the crashed worker's lease lasts, others wait (no busy loop).
		out := h.apply(t, upsert("9", 1, "one"), 1)
		expect(t, out, ResultLocked)
		if out.Delay <= 0 || out.Delay > 2*time.Second {
			t.Fatalf("locked delay %s", out.Delay)
		}
		time.Sleep(1100 * time.Millisecond)
		expect(t, h.apply(t, upsert("9", 2, "two"), 1), ResultApplied)
		recs := h.remote(t, "9")
		if len(recs) != 1 || recs[0]["title"] != "two" {
			t.Fatalf("want one record with v2, got %v", recs)
		}
	})
}

func TestApplyHTTPOutcomeClasses(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		_ = h.api.SetFaults(fakeapi.Faults{ErrorRate: 1})
		out := h.apply(t, upsert("a", 1, "x"), 1)
		expect(t, out, ResultRetried)
		if !out.SinkFailure || out.Delay <= 0 {
			t.Fatalf("5xx: %+v", out)
		}
		// The fifth failed API call (MaxAttempts) parks it with the last
		// error, whatever the bus's attempt count says.
		for i := 2; i < 5; i++ {
			expect(t, h.apply(t, upsert("a", 1, "x"), 1), ResultRetried)
		}
		out = h.apply(t, upsert("a", 1, "x"), 1)
		expect(t, out, ResultParked)
		if !strings.Contains(out.Reason, "gave up after 5 failed API calls") {
			t.Fatalf("reason %q", out.Reason)
		}
		_ = h.api.SetFaults(fakeapi.Faults{RateLimit: 1, Burst: 1})
		expect(t, h.apply(t, upsert("b", 1, "x"), 1), ResultApplied) // uses the burst
		out = h.apply(t, upsert("b", 2, "x"), 1)
		expect(t, out, ResultRetried)
		var se interface{ Error() string }
		if se = out.Err; se == nil || !strings.Contains(se.Error(), "429") || out.Delay < 500*time.Millisecond {
			t.Fatalf("429: %+v", out)
		}
		_ = h.api.SetFaults(fakeapi.Faults{})
		// 404 on update: the record vanished remotely → re-created.
		expect(t, h.apply(t, upsert("c", 1, "x"), 1), ResultApplied)
		recs := h.remote(t, "c")
		h.api.Reset()
		expect(t, h.apply(t, upsert("c", 2, "again"), 1), ResultApplied)
		if got := h.remote(t, "c"); len(got) != 1 || got[0]["title"] != "again" || len(recs) != 1 {
			t.Fatalf("re-create after 404: before %v, after %v", recs, got)
		}
		// 404 on delete: already gone is success.
		h.api.Reset()
		expect(t, h.apply(t, del("c", 3), 1), ResultApplied)
		// A 4xx other than 404/408/429 is permanent: parked with the status.
		out = h.apply(t, []byte(`{"id":"z","entity":"broken","key":"k","version":1,"op":"upsert","data":{}}`), 1)
		expect(t, out, ResultParked)
		if !strings.Contains(out.Reason, "405") {
			t.Fatalf("reason %q lacks the status", out.Reason)
		}
	})
}

func TestApplyLostLeaseSchedulesRepair(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, func(c *Config) { c.LeaseTTL = time.Second })
		ctx := context.Background()
		expect(t, h.apply(t, upsert("z", 1, "one"), 1), ResultApplied)
		// A zombie: a worker stalled past its lease (its renewal hangs)
		// behind a slow API (1.5s) outlives its 1s lease, while another
		// worker applies v3 in between; the zombie's v2 lands last.
		zombieApplier := h.applierOn(t, stalled{h.store})
		_ = h.api.SetFaults(fakeapi.Faults{Latency: fakeapi.Duration(1500 * time.Millisecond)})
		zombie := make(chan Outcome, 1)
		go func() { zombie <- zombieApplier.Apply(ctx, upsert("z", 2, "two (zombie)"), 1) }()
		time.Sleep(1100 * time.Millisecond)
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("z", 3, "three"), 1), ResultApplied)
		out := <-zombie
		expect(t, out, ResultRetried)
		if !errors.Is(out.Err, store.ErrFenced) {
			t.Fatalf("zombie commit: %+v", out)
		}
		if recs := h.remote(t, "z"); len(recs) != 1 || recs[0]["title"] != "two (zombie)" {
			t.Fatalf("precondition: the zombie write should be standing, got %v", recs)
		}
		// The zombie's retry repairs the key to its newest state.
		expect(t, h.apply(t, upsert("z", 2, "two (zombie)"), 2), ResultRepaired)
		if recs := h.remote(t, "z"); len(recs) != 1 || recs[0]["title"] != "three" {
			t.Fatalf("after repair want v3, got %v", recs)
		}
		expect(t, h.apply(t, upsert("z", 2, "two (zombie)"), 3), ResultStale)
	})
}

// takenOver is a sink whose Update goes out only after takeover ran (it
// lets the caller's lease expire and another worker write), and answers
// answer once it landed.
type takenOver struct {
	sink.Sink
	takeover func()
	answer   error
}

func (s takenOver) Update(ctx context.Context, remoteID string, r sink.Record) error {
	s.takeover()
	if err := s.Sink.Update(ctx, remoteID, r); err != nil {
		return err
	}
	return s.answer
}

// zombieWrite applies v2 of key with an Applier on st whose renewals stall:
// its update goes out after its 1s lease expired and another worker
// applied v3, and it hears answer back. The zombie's v2 stands remotely.
func zombieWrite(t *testing.T, h *harness, st store.Store, key string, answer error) Outcome {
	t.Helper()
	sk := takenOver{Sink: h.applier.sink, answer: answer, takeover: func() {
		time.Sleep(1100 * time.Millisecond)
		expect(t, h.apply(t, upsert(key, 3, "three"), 1), ResultApplied)
	}}
	a, err := NewApplier(stalled{st}, sk, h.applier.cfg)
	if err != nil {
		t.Fatal(err)
	}
	out := a.Apply(context.Background(), upsert(key, 2, "two (zombie)"), 1)
	if recs := h.remote(t, key); len(recs) != 1 || recs[0]["title"] != "two (zombie)" {
		t.Fatalf("precondition: the zombie write should be standing, got %v", recs)
	}
	return out
}

// expectRepaired applies the zombie's retry, which must find the key
// flagged and re-apply v3.
func expectRepaired(t *testing.T, h *harness, key string) {
	t.Helper()
	expect(t, h.apply(t, upsert(key, 2, "two (zombie)"), 2), ResultRepaired)
	if recs := h.remote(t, key); len(recs) != 1 || recs[0]["title"] != "three" {
		t.Fatalf("after repair want v3, got %v", recs)
	}
}

func shortBackoff(c *Config) {
	c.LeaseTTL = time.Second
	c.BackoffBase, c.BackoffMax = 10*time.Millisecond, 100*time.Millisecond
}

// A zombie whose write landed and then answered an error never runs a
// renewal that could notice the lost lease: its release says so, and it
// flags the key.
func TestApplyZombieWhoseCallAnswersAnErrorFlagsTheKey(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, shortBackoff)
		expect(t, h.apply(t, upsert("za", 1, "one"), 1), ResultApplied)
		out := zombieWrite(t, h, h.store, "za", &sink.Error{Op: "update", Status: 504, Retryable: true, Body: "gateway timeout"})
		if out.Result != ResultRetried || !out.SinkFailure {
			t.Fatalf("zombie outcome %s (%s), sink failure %v; want a retry for the API's failure", out.Result, out.Reason, out.SinkFailure)
		}
		expectRepaired(t, h, "za")
	})
}

// unsure is a store that loses Commit's answer and fails MarkRepair a few
// times: the zombie cannot learn from its commit that its lease was lost,
// and must keep trying to flag the key.
type unsure struct {
	store.Store
	markFailures *atomic.Int32 // MarkRepair calls left to fail
	marks        *atomic.Int32 // MarkRepair calls made
}

func (u unsure) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	err := u.Store.Commit(ctx, l, c)
	return fmt.Errorf("commit %s: connection reset, answer lost (it was %v)", l.Key, err)
}

func (u unsure) MarkRepair(ctx context.Context, k store.Key) error {
	u.marks.Add(1)
	if u.markFailures.Add(-1) >= 0 {
		return errors.New("store unreachable")
	}
	return u.Store.MarkRepair(ctx, k)
}

func TestApplyZombieWhoseCommitAndMarkFailKeepsTryingUntilTheKeyIsFlagged(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, shortBackoff)
		expect(t, h.apply(t, upsert("zb", 1, "one"), 1), ResultApplied)
		var fails, marks atomic.Int32
		fails.Store(2)
		out := zombieWrite(t, h, unsure{h.store, &fails, &marks}, "zb", nil)
		if out.Result != ResultRetried || !strings.Contains(out.Reason, "lease lost") {
			t.Fatalf("zombie outcome %s (%s); want a retry for the lost lease", out.Result, out.Reason)
		}
		if n := marks.Load(); n != 3 {
			t.Fatalf("%d MarkRepair calls, want 3 (two failed)", n)
		}
		expectRepaired(t, h, "zb")
	})
}

// A zombie's create lands beside the record a later holder created, and
// its repair flag is still set when a newer event comes: that write must
// remove the duplicate too, not only update the record it knows.
func TestApplyNewerEventAfterAZombieCreateRemovesTheDuplicate(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		ctx := context.Background()
		expect(t, h.apply(t, upsert("zc", 1, "one"), 1), ResultApplied)
		// The zombie's create, and the flag its fenced commit set.
		if _, err := h.applier.sink.Create(ctx, recordOf(t, upsert("zc", 1, "one (zombie)"))); err != nil {
			t.Fatal(err)
		}
		if err := h.store.MarkRepair(ctx, store.Key{Entity: "listing", Key: "zc"}); err != nil {
			t.Fatal(err)
		}
		expect(t, h.apply(t, upsert("zc", 2, "two"), 1), ResultApplied)
		if recs := h.remote(t, "zc"); len(recs) != 1 || recs[0]["title"] != "two" {
			t.Fatalf("want one record at v2, got %v", recs)
		}
		expect(t, h.apply(t, upsert("zc", 2, "two"), 1), ResultDuplicate) // the flag is cleared
	})
}

// unrenewable is a real store whose lease renewals fail, as for a worker
// cut off from its store.
type unrenewable struct {
	store.Store
	tries *atomic.Int32 // renewals tried, when not nil
}

func (u unrenewable) Extend(context.Context, store.Lease, time.Duration) (store.Lease, error) {
	if u.tries != nil {
		u.tries.Add(1)
	}
	return store.Lease{}, errors.New("store unreachable")
}

// stalled is a real store whose first lease renewal hangs for 2s, as for a
// worker stalled past its lease: it neither renews nor notices.
type stalled struct{ store.Store }

func (stalled) Extend(context.Context, store.Lease, time.Duration) (store.Lease, error) {
	time.Sleep(2 * time.Second)
	return store.Lease{}, errors.New("stalled")
}

// A worker cut off from its store abandons its call after two failed
// renewals, a third of a TTL before its lease could expire, instead of
// letting it land after the next holder's write.
func TestApplyAbandonsACallItCannotRenew(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, func(c *Config) { c.LeaseTTL = 1500 * time.Millisecond })
		expect(t, h.apply(t, upsert("cut", 1, "one"), 1), ResultApplied)
		var tries atomic.Int32
		a := h.applierOn(t, unrenewable{h.store, &tries})
		// The call would take 3s: six renewal ticks.
		_ = h.api.SetFaults(fakeapi.Faults{Latency: fakeapi.Duration(3 * time.Second)})
		out := a.Apply(context.Background(), upsert("cut", 2, "two"), 1)
		if out.Result != ResultRetried || !strings.Contains(out.Reason, "lease lost") || out.SinkFailure {
			t.Fatalf("outcome %s (%s), sink failure %v; want a retry for the lost lease", out.Result, out.Reason, out.SinkFailure)
		}
		// Abandoned at the second failed renewal (a third of a TTL before
		// the lease expires), not at a later tick, when it has expired.
		if n := tries.Load(); n != 2 {
			t.Fatalf("%d renewals tried before the call was abandoned, want 2", n)
		}
	})
}

// stolen is a real store that finds every lease taken at the first renewal.
type stolen struct{ store.Store }

func (stolen) Extend(_ context.Context, l store.Lease, _ time.Duration) (store.Lease, error) {
	return store.Lease{}, fmt.Errorf("extend %s: %w", l.Key, store.ErrFenced)
}

// A call slower than the lease (the throttle's queue, a slow API) keeps
// its lease: another worker finds the key locked, and the slow write
// commits.
func TestApplyRenewsTheLeaseDuringASlowCall(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, func(c *Config) { c.LeaseTTL = time.Second })
		ctx := context.Background()
		_ = h.api.SetFaults(fakeapi.Faults{Latency: fakeapi.Duration(1500 * time.Millisecond)})
		slow := make(chan Outcome, 1)
		go func() { slow <- h.applier.Apply(ctx, upsert("slow", 1, "one"), 1) }()
		time.Sleep(1200 * time.Millisecond) // past the lease's first TTL
		expect(t, h.apply(t, upsert("slow", 2, "two"), 1), ResultLocked)
		expect(t, <-slow, ResultApplied)
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("slow", 2, "two"), 1), ResultApplied)
	})
}

// A worker whose renewal finds the lease taken stops its call and flags
// the key: the call may have reached the API after the new holder's.
func TestApplyStopsACallWhoseLeaseIsLost(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 5*time.Second, func(c *Config) { c.LeaseTTL = time.Second })
		ctx := context.Background()
		expect(t, h.apply(t, upsert("lost", 1, "one"), 1), ResultApplied)
		a := h.applierOn(t, stolen{h.store})
		_ = h.api.SetFaults(fakeapi.Faults{Latency: fakeapi.Duration(3 * time.Second)})
		start := time.Now()
		out := a.Apply(ctx, upsert("lost", 2, "two"), 1)
		if out.Result != ResultRetried || !strings.Contains(out.Reason, "lease lost") {
			t.Fatalf("outcome %s (%s), want a retry for the lost lease", out.Result, out.Reason)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the call went on for %s after its lease was lost", d)
		}
		_ = h.api.SetFaults(fakeapi.Faults{})
		// v2 is in doubt: an older event may not repair (it would write v1
		// over what may be v2); v2's retry lands it and clears the flag.
		expect(t, h.apply(t, upsert("lost", 1, "one"), 2), ResultSuperseded)
		expect(t, h.apply(t, upsert("lost", 2, "two"), 2), ResultApplied)
		expect(t, h.apply(t, upsert("lost", 1, "one"), 3), ResultStale)
		if recs := h.remote(t, "lost"); len(recs) != 1 || recs[0]["title"] != "two" {
			t.Fatalf("want v2, got %v", recs)
		}
	})
}

// localFailure is a sink whose calls never go out: its limiter (say) is
// unreachable.
type localFailure struct{ sink.Sink }

func (localFailure) Create(context.Context, sink.Record) (string, error) {
	return "", fmt.Errorf("take a rate token: %w: connection refused", sink.ErrLocal)
}

// A call that never went out (a local failure: limiter, encoder) waits:
// it is no API failure, feeds no breaker and uses up no attempts.
func TestApplyLocalFailureWaitsWithoutBlamingTheAPI(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		local, err := NewApplier(h.store, localFailure{h.applier.sink}, h.applier.cfg)
		if err != nil {
			t.Fatal(err)
		}
		for attempt := 1; attempt <= 3*h.applier.cfg.MaxAttempts; attempt++ {
			out := local.Apply(context.Background(), upsert("local", 1, "one"), attempt)
			if out.Result != ResultRetried || out.SinkFailure || out.Delay <= 0 || out.Delay > maxWaitDelay {
				t.Fatalf("attempt %d: outcome %s, sink failure %v, delay %s (%s); want a bounded wait that is no sink failure", attempt, out.Result, out.SinkFailure, out.Delay, out.Reason)
			}
		}
		// The API's own failures are counted from zero afterwards.
		_ = h.api.SetFaults(fakeapi.Faults{ErrorRate: 1})
		expect(t, h.apply(t, upsert("local", 1, "one"), 1), ResultRetried)
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("local", 1, "one"), 1), ResultApplied)
	})
}

// Failure 5 of issue 12: a key locked (by a crashed worker) for longer than
// MaxAttempts retries, then one API error, must not park the newest event.
func TestApplyLongLockThenOneAPIErrorDoesNotPark(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		ctx := context.Background()
		expect(t, h.apply(t, upsert("hot", 1, "one"), 1), ResultApplied)
		// Worker A took v2 and died mid-call; its lease stands.
		if _, _, err := h.store.Acquire(ctx, store.Key{Entity: "listing", Key: "hot"}, "killed-worker", 1500*time.Millisecond, 2); err != nil {
			t.Fatal(err)
		}
		attempt := 1
		for ; attempt <= 2*h.applier.cfg.MaxAttempts; attempt++ {
			expect(t, h.apply(t, upsert("hot", 3, "three"), attempt), ResultLocked)
		}
		time.Sleep(1600 * time.Millisecond) // A's lease expires
		_ = h.api.SetFaults(fakeapi.Faults{ErrorRate: 1})
		out := h.apply(t, upsert("hot", 3, "three"), attempt)
		if out.Result != ResultRetried || !out.SinkFailure {
			t.Fatalf("after %d locked attempts one API error gave %s (%s); want a retry", attempt-1, out.Result, out.Reason)
		}
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("hot", 3, "three"), attempt+1), ResultApplied)
		if recs := h.remote(t, "hot"); len(recs) != 1 || recs[0]["title"] != "three" {
			t.Fatalf("want v3 applied, got %v", recs)
		}
	})
}

// Failure 3 of issue 12: while a newer write's outcome is unknown (it
// timed out after it landed), an older event must not overwrite it; the
// newer event's retry lands and nothing stale reaches the API.
func TestApplyOlderEventNeverPassesAWriteInDoubt(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 300*time.Millisecond, nil)
		expect(t, h.apply(t, upsert("doubt", 1, "one"), 1), ResultApplied)
		// v3's update lands, but its answer never comes back in time.
		_ = h.api.SetFaults(fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(time.Second)})
		expect(t, h.apply(t, upsert("doubt", 3, "three"), 1), ResultRetried)
		_ = h.api.SetFaults(fakeapi.Faults{})
		// v2, delivered late, finds v3 in doubt: it is superseded.
		expect(t, h.apply(t, upsert("doubt", 2, "two"), 1), ResultSuperseded)
		if recs := h.remote(t, "doubt"); len(recs) != 1 || recs[0]["title"] != "three" {
			t.Fatalf("the API's record after the older event: %v, want v3", recs)
		}
		expect(t, h.apply(t, upsert("doubt", 3, "three"), 2), ResultApplied)
		expect(t, h.apply(t, upsert("doubt", 2, "two"), 2), ResultStale)
		if n := h.api.Stats().StaleWrites; n != 0 {
			t.Fatalf("the API saw %d stale writes", n)
		}
	})
}

// A create in doubt (timed out after it landed) is looked up, not
// repeated, by the next attempt: the intent Acquire recorded covers it
// without a round trip of its own.
func TestApplyCreateInDoubtIsLookedUpNotRepeated(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarnessTimeout(t, sf, 300*time.Millisecond, nil)
		_ = h.api.SetFaults(fakeapi.Faults{TimeoutRate: 1, TimeoutHold: fakeapi.Duration(time.Second)})
		expect(t, h.apply(t, upsert("new", 1, "one"), 1), ResultRetried)
		_ = h.api.SetFaults(fakeapi.Faults{})
		expect(t, h.apply(t, upsert("new", 1, "one"), 2), ResultApplied)
		if recs := h.remote(t, "new"); len(recs) != 1 {
			t.Fatalf("want one record, got %v", recs)
		}
		if d := h.api.Stats().DuplicateRecords; d != 0 {
			t.Fatalf("%d duplicate records", d)
		}
	})
}

func recordOf(t *testing.T, body []byte) sink.Record {
	t.Helper()
	ev, err := event.Parse(body, 0)
	if err != nil {
		t.Fatal(err)
	}
	return sink.Record{Entity: ev.Entity, Key: ev.Key, Version: ev.Version, Data: ev.Data}
}

func TestApplyLookupBeforeCreateAdoptsExistingRecords(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, func(c *Config) { c.LookupBeforeCreate = true })
		// The API already holds this entity (synced before eventsync ran).
		if _, err := h.applier.sink.Create(context.Background(), recordOf(t, upsert("old", 1, "from before"))); err != nil {
			t.Fatal(err)
		}
		expect(t, h.apply(t, upsert("old", 3, "now"), 1), ResultApplied)
		recs := h.remote(t, "old")
		if len(recs) != 1 || recs[0]["title"] != "now" {
			t.Fatalf("want the existing record adopted and updated, got %v", recs)
		}
	})
}

func TestApplyStoreOutageRetriesAndNeverParks(t *testing.T) {
	forEachStore(t, func(t *testing.T, sf storeFactory) {
		h := newHarness(t, sf, nil)
		if err := h.store.Close(); err != nil {
			t.Fatal(err)
		}
		// Past max attempts a sink failure would be parked; a store failure
		// must not be, or a store outage would park every valid event.
		out := h.apply(t, upsert("s", 1, "x"), 99)
		expect(t, out, ResultRetried)
		if out.SinkFailure || out.Delay <= 0 || !strings.Contains(out.Reason, "acquire lease") {
			t.Fatalf("store outage outcome: %+v", out)
		}
	})
}
