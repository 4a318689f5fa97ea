package natskv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/embedded"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
)

// shared is one embedded server for the package's tests; each test gets its
// own buckets on it. It proves the store works with nothing installed.
var shared *embedded.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "natskv-test-")
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

// fakeClock lets lease-expiry tests run without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type opener func(t *testing.T, clock func() time.Time) *Store

func openOn(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Bucket = testenv.UniqueName("es")
	cfg.Logger = quiet()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.DeleteBuckets(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		_ = s.Close()
	})
	return s
}

func embeddedStore(t *testing.T, clock func() time.Time) *Store {
	nc, err := shared.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return openOn(t, Config{Conn: nc, Now: clock})
}

func externalStore(t *testing.T, clock func() time.Time) *Store {
	return openOn(t, Config{URL: testenv.NATS(t), Now: clock})
}

func TestEmbedded(t *testing.T) {
	t.Parallel()
	runBehaviour(t, embeddedStore)
}

func TestExternalServer(t *testing.T) {
	t.Parallel()
	testenv.NATS(t)
	runBehaviour(t, externalStore)
}

func runBehaviour(t *testing.T, open opener) {
	tests := map[string]func(*testing.T, opener){
		"LeaseCommitRoundTrip":     testLeaseCommitRoundTrip,
		"TakeoverFencesOldHolder":  testTakeoverFencesOldHolder,
		"ConcurrentAcquireOneWins": testConcurrentAcquireOneWins,
		"MarkRepairKeepsLease":     testMarkRepairKeepsLease,
		"StaleCommit":              testStaleCommit,
		"ScanEncodesKeys":          testScanEncodesKeys,
		"ControlExpiry":            testControlExpiry,
	}
	for name, fn := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open)
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testLeaseCommitRoundTrip(t *testing.T, open opener) {
	ctx := ctxT(t)
	clock := newClock()
	s := open(t, clock.Now)
	k := store.Key{Entity: "listing", Key: "42"}

	l1, st, err := s.Acquire(ctx, k, "w1", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 0 || st.Intent != nil {
		t.Fatalf("fresh key state = %+v, want zero", st)
	}
	// Extend changes the KV revision; the lease token must still hold.
	if l1, err = s.Extend(ctx, l1, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l1, store.Commit{Version: 3, RemoteID: "r-1", Event: []byte(`{"v":3}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l1, store.Commit{Version: 4, RemoteID: "r-1"}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("commit after commit released the lease: got %v, want ErrFenced", err)
	}
	// Another owner may take it at once: Commit released the lease.
	clock.Advance(time.Second)
	at := clock.Now()
	l2, st, err := s.Acquire(ctx, k, "w2", time.Minute, 5)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Token <= l1.Token {
		t.Fatalf("token did not increase: %d then %d", l1.Token, l2.Token)
	}
	if st.AppliedVersion != 3 || st.RemoteID != "r-1" || string(st.LastEvent) != `{"v":3}` || st.Intent != nil || st.Deleted {
		t.Fatalf("state after commit = %+v", st)
	}
	// MarkRepair changes the revision the store remembered for l2: the
	// failure is still counted, on the record read again.
	if err := s.MarkRepair(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseFailed(ctx, l2); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	_, st, err = s.Acquire(ctx, k, "w3", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Intent{Version: 5, Token: l2.Token, At: at, Failures: 1}
	if st.Intent == nil || st.Intent.Version != want.Version || st.Intent.Token != want.Token || !st.Intent.At.Equal(at) || st.Intent.Failures != 1 || !st.RepairNeeded {
		t.Fatalf("after a failure: intent %+v repair %v, want %+v and the repair flag", st.Intent, st.RepairNeeded, want)
	}
}

func testTakeoverFencesOldHolder(t *testing.T, open opener) {
	ctx := ctxT(t)
	clock := newClock()
	s := open(t, clock.Now)
	k := store.Key{Entity: "host", Key: "h"}

	a, _, err := s.Acquire(ctx, k, "a", 30*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	_, _, err = s.Acquire(ctx, k, "b", 30*time.Second, 1)
	var locked *store.LockedError
	if !errors.As(err, &locked) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("acquire of held key: got %v, want *LockedError", err)
	}
	if locked.RetryAfter != 20*time.Second {
		t.Fatalf("RetryAfter = %s, want 20s", locked.RetryAfter)
	}
	clock.Advance(21 * time.Second)
	b, st, err := s.Acquire(ctx, k, "b", 30*time.Second, 1)
	if err != nil {
		t.Fatalf("acquire of expired lease: %v", err)
	}
	if b.Token <= a.Token {
		t.Fatalf("takeover token %d not above %d", b.Token, a.Token)
	}
	if st.Intent == nil || st.Intent.Token != a.Token {
		t.Fatalf("intent seen by the takeover = %+v, want the old holder's (token %d)", st.Intent, a.Token)
	}
	for name, op := range map[string]func() error{
		"Commit":        func() error { return s.Commit(ctx, a, store.Commit{Version: 1}) },
		"Extend":        func() error { _, err := s.Extend(ctx, a, time.Minute); return err },
		"Release":       func() error { return s.Release(ctx, a) },
		"ReleaseFailed": func() error { return s.ReleaseFailed(ctx, a) },
	} {
		if err := op(); !errors.Is(err, store.ErrFenced) {
			t.Errorf("%s by the old holder: got %v, want ErrFenced", name, err)
		}
	}
	if err := s.Commit(ctx, b, store.Commit{Version: 1, RemoteID: "x"}); err != nil {
		t.Fatalf("new holder's commit: %v", err)
	}
}

func testConcurrentAcquireOneWins(t *testing.T, open opener) {
	ctx := ctxT(t)
	s := open(t, nil)
	k := store.Key{Entity: "booking", Key: "b1"}
	var won, locked atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.Acquire(ctx, k, fmt.Sprintf("w%d", i), time.Minute, 1)
			switch {
			case err == nil:
				won.Add(1)
			case errors.Is(err, store.ErrLocked):
				locked.Add(1)
			default:
				t.Errorf("acquire: %v", err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || locked.Load() != 7 {
		t.Fatalf("won=%d locked=%d, want exactly one winner", won.Load(), locked.Load())
	}
}

func testMarkRepairKeepsLease(t *testing.T, open opener) {
	ctx := ctxT(t)
	s := open(t, nil)
	k := store.Key{Entity: "listing", Key: "r"}
	l, _, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A write by someone else (MarkRepair) must not fence the holder.
	if err := s.MarkRepair(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l, store.Commit{Version: 1, RemoteID: "r"}); err != nil {
		t.Fatalf("commit after MarkRepair: %v", err)
	}
	if err := s.MarkRepair(ctx, k); err != nil {
		t.Fatal(err)
	}
	l, st, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !st.RepairNeeded {
		t.Fatal("RepairNeeded not set")
	}
	// A repair re-applies the applied version and clears the flag.
	if err := s.Commit(ctx, l, store.Commit{Version: 1, RemoteID: "r"}); err != nil {
		t.Fatal(err)
	}
	_, st, err = s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.RepairNeeded {
		t.Fatal("RepairNeeded not cleared by commit")
	}
	// MarkRepair on a key never seen creates it.
	if err := s.MarkRepair(ctx, store.Key{Entity: "listing", Key: "new"}); err != nil {
		t.Fatal(err)
	}
}

func testStaleCommit(t *testing.T, open opener) {
	ctx := ctxT(t)
	s := open(t, nil)
	k := store.Key{Entity: "listing", Key: "s"}
	l, _, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l, store.Commit{Version: 5, Deleted: true}); err != nil {
		t.Fatal(err)
	}
	l, st, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Deleted || st.AppliedVersion != 5 {
		t.Fatalf("tombstone not kept: %+v", st)
	}
	if err := s.Commit(ctx, l, store.Commit{Version: 4}); !errors.Is(err, store.ErrStaleCommit) {
		t.Fatalf("commit of version 4 over 5: got %v, want ErrStaleCommit", err)
	}
}

func testScanEncodesKeys(t *testing.T, open opener) {
	ctx := ctxT(t)
	s := open(t, nil)
	want := map[string]bool{}
	// Keys KV would reject if used raw: spaces, dots, wildcards, unicode.
	for _, key := range []string{"a b", "x.y", "*", ">", "ünï", "a/b=c", "-"} {
		k := store.Key{Entity: "listing", Key: key}
		l, _, err := s.Acquire(ctx, k, "w", time.Minute, 0)
		if err != nil {
			t.Fatalf("acquire %q: %v", key, err)
		}
		if err := s.Commit(ctx, l, store.Commit{Version: 1, RemoteID: "r" + key}); err != nil {
			t.Fatal(err)
		}
		want[key] = true
	}
	// An entity whose name is a prefix of another must not leak into it.
	if err := s.MarkRepair(ctx, store.Key{Entity: "listings", Key: "other"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	err := s.Scan(ctx, "listing", func(k store.Key, st store.State) error {
		if k.Entity != "listing" {
			t.Errorf("scan of listing returned %v", k)
		}
		if st.RemoteID != "r"+k.Key {
			t.Errorf("%v: remote id %q", k, st.RemoteID)
		}
		got[k.Key] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("scan got %v, want %v", got, want)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.Scan(ctx, "listing", func(store.Key, store.State) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("scan did not stop at the callback's error: err=%v calls=%d", err, calls)
	}
	if err := s.Scan(ctx, "nothing", func(store.Key, store.State) error { return stop }); err != nil {
		t.Fatalf("scan of an unknown entity: %v", err)
	}
}

func testControlExpiry(t *testing.T, open opener) {
	ctx := ctxT(t)
	clock := newClock()
	s := open(t, clock.Now)
	if err := s.SetControl(ctx, "pause/live", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetControl(ctx, "worker/a", []byte("hb-a"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.SetControl(ctx, "worker/b", []byte("hb-b"), time.Hour); err != nil {
		t.Fatal(err)
	}
	v, ok, err := s.GetControl(ctx, "worker/a")
	if err != nil || !ok || string(v) != "hb-a" {
		t.Fatalf("GetControl = %q %v %v", v, ok, err)
	}
	clock.Advance(11 * time.Second)
	if _, ok, err := s.GetControl(ctx, "worker/a"); err != nil || ok {
		t.Fatalf("expired record: ok=%v err=%v, want absent", ok, err)
	}
	got, err := s.ListControl(ctx, "worker/")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got["worker/b"]) != "hb-b" {
		t.Fatalf("ListControl = %q, want only worker/b", got)
	}
	if err := s.DeleteControl(ctx, "pause/live"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteControl(ctx, "never-set"); err != nil {
		t.Fatalf("delete of absent record: %v", err)
	}
	if _, ok, _ := s.GetControl(ctx, "pause/live"); ok {
		t.Fatal("deleted record still there")
	}
	all, err := s.ListControl(ctx, "")
	if err != nil || len(all) != 1 {
		t.Fatalf("ListControl(\"\") = %q, %v", all, err)
	}
}

// TestRestartKeepsState proves the embedded mode is durable: state and
// token order survive a server restart on the same data directory.
func TestRestartKeepsState(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	dir := t.TempDir()
	k := store.Key{Entity: "listing", Key: "1"}

	srv, err := embedded.Start(ctx, embedded.Config{DataDir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, Config{URL: srv.ClientURL(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	l1, _, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l1, store.Commit{Version: 7, RemoteID: "r7"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetControl(ctx, "pause/resync", []byte("yes"), 0); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	srv.Shutdown()

	srv, err = embedded.Start(ctx, embedded.Config{DataDir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err = Open(ctx, Config{Conn: nc, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	l2, st, err := s.Acquire(ctx, k, "w", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 7 || st.RemoteID != "r7" {
		t.Fatalf("state after restart = %+v", st)
	}
	if l2.Token <= l1.Token {
		t.Fatalf("token after restart %d not above %d", l2.Token, l1.Token)
	}
	if v, ok, err := s.GetControl(ctx, "pause/resync"); err != nil || !ok || string(v) != "yes" {
		t.Fatalf("control after restart = %q %v %v", v, ok, err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no url":     {},
		"bad bucket": {URL: "nats://x", Bucket: "a.b"},
		"replicas":   {URL: "nats://x", Replicas: 7},
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
	if err == nil {
		t.Fatal("open of an unreachable server succeeded")
	}
	if want := "is it running"; !strings.Contains(err.Error(), want) || setting.Key(err) != "store" {
		t.Fatalf("error %q (setting %q) does not say %q about the store", err, setting.Key(err), want)
	}
}
