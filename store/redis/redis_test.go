package redis_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/store"
	"github.com/eventsync/eventsync/store/redis"
	"github.com/eventsync/eventsync/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deleteKeysOnCleanup removes every key under prefix when the test ends.
func deleteKeysOnCleanup(t testing.TB, url, prefix string) {
	t.Cleanup(func() {
		opts, err := goredis.ParseURL(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		rdb := goredis.NewClient(opts)
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
		var names []string
		for iter.Next(ctx) {
			names = append(names, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("cleanup scan: %v", err)
			return
		}
		for chunk := range slicesChunk(names, 500) {
			if err := rdb.Unlink(ctx, chunk...).Err(); err != nil {
				t.Errorf("cleanup unlink: %v", err)
				return
			}
		}
	})
}

func slicesChunk(s []string, n int) func(func([]string) bool) {
	return func(yield func([]string) bool) {
		for len(s) > 0 {
			m := min(n, len(s))
			if !yield(s[:m]) {
				return
			}
			s = s[m:]
		}
	}
}

func openIsolated(t testing.TB) *redis.Store {
	t.Helper()
	s, _ := openWithPrefix(t)
	return s
}

// openWithPrefix opens a store under a prefix of its own and returns both.
func openWithPrefix(t testing.TB) (*redis.Store, string) {
	return openWithConfig(t, "")
}

// openWithConfig opens a store under a prefix of its own, with the query
// parameter param (if any) added to the test Redis URL.
func openWithConfig(t testing.TB, param string) (*redis.Store, string) {
	t.Helper()
	url := testenv.Redis(t)
	query := ""
	if param != "" {
		query = "?" + param
		if strings.Contains(url, "?") {
			query = "&" + param
		}
	}
	prefix := testenv.UniqueName("storetest")
	deleteKeysOnCleanup(t, url, prefix)
	s, err := redis.Open(context.Background(), redis.Config{URL: url + query, Prefix: prefix, PoolSize: 16,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, prefix
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store { return openIsolated(t) })
}

// Without the autopipeliner every script is its own round trip; both paths
// keep the same contract.
func TestConformanceWithoutAutoPipeline(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, _ := openWithConfig(t, "autopipeline=false")
		return s
	})
}

// Redis forgets its scripts on a restart (or SCRIPT FLUSH); a pipelined
// EVALSHA then fails with NOSCRIPT and the store must load the script again
// rather than fail the call.
func TestLeaseScriptsSurviveAScriptCacheFlush(t *testing.T) {
	s := openIsolated(t)
	ctx := context.Background()
	k := store.Key{Entity: "listing", Key: "flushed"}
	l, _, err := s.Acquire(ctx, k, "w1", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Client().ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, l, store.Commit{Version: 3, RemoteID: "r-1"}); err != nil {
		t.Fatalf("commit after SCRIPT FLUSH: %v", err)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatalf("release after SCRIPT FLUSH: %v", err)
	}
	_, st, err := s.Acquire(ctx, k, "w2", time.Minute, 0)
	if err != nil {
		t.Fatalf("acquire after SCRIPT FLUSH: %v", err)
	}
	if st.AppliedVersion != 3 || st.RemoteID != "r-1" {
		t.Fatalf("state after SCRIPT FLUSH = %+v, want version 3 with remote id r-1", st)
	}
}

// The test Redis runs without persistence, as a default install does: Open
// must say so, naming the consequence and the fix.
func TestPersistenceWarning(t *testing.T) {
	t.Parallel()
	url := testenv.Redis(t)
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	p, err := redis.CheckPersistence(ctx, rdb)
	if err != nil {
		t.Fatalf("CheckPersistence: %v", err)
	}
	if p.Durable() {
		t.Skipf("the test Redis has persistence (%+v); this test needs one without", p)
	}
	if !p.SaveKnown || p.AppendOnly || p.Save != "" {
		t.Errorf("CheckPersistence = %+v, want appendonly off and an empty save schedule", p)
	}

	var logs bytes.Buffer
	prefix := testenv.UniqueName("persist")
	deleteKeysOnCleanup(t, url, prefix)
	s, err := redis.Open(ctx, redis.Config{URL: url, Prefix: prefix, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	_ = s.Close()
	want := `Redis at ` + opts.Addr + ` has no persistence (appendonly no, save \"\"): a restart forgets applied versions and lets stale events through; enable appendonly yes or use the PostgreSQL store`
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), want) {
		t.Errorf("Open logged %q, want a WARN containing %q", logs.String(), want)
	}
}

func TestPersistenceWarningText(t *testing.T) {
	t.Parallel()
	cases := []struct {
		p    redis.Persistence
		want string
	}{
		{redis.Persistence{AppendOnly: true, SaveKnown: true}, ""},
		{redis.Persistence{Save: "3600 1", SaveKnown: true}, ""},
		{redis.Persistence{SaveKnown: true}, `Redis at h:1 has no persistence (appendonly no, save ""): a restart forgets applied versions and lets stale events through; enable appendonly yes or use the PostgreSQL store`},
		{redis.Persistence{AppendOnly: true}, ""},
		{redis.Persistence{}, `Redis at h:1 has no persistence (appendonly no, save unknown, CONFIG is disabled): a restart forgets applied versions and lets stale events through; enable appendonly yes or use the PostgreSQL store`},
	}
	for _, tc := range cases {
		if got := tc.p.Warning("h:1"); got != tc.want {
			t.Errorf("%+v.Warning() = %q, want %q", tc.p, got, tc.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cases := []struct {
		name string
		cfg  redis.Config
		want []string
		key  string // the setting the error names (internal/setting)
	}{
		{"empty URL", redis.Config{}, []string{"URL is empty", "want redis://"}, "store"},
		{"bad prefix", redis.Config{URL: "redis://127.0.0.1:6379", Prefix: "a{b}"}, []string{`prefix "a{b}"`, "letters, digits"}, ""},
		{"wrong scheme", redis.Config{URL: "postgres://127.0.0.1:6379"}, []string{"parse URL", "redis://[:password@]host:6379/db"}, "store"},
		{"nothing listening", redis.Config{URL: "redis://127.0.0.1:1/0?dial_timeout=2s"}, []string{"connect to Redis at 127.0.0.1:1", "is it running"}, "store"},
		{"bad autopipeline", redis.Config{URL: "redis://127.0.0.1:6379/0?autopipeline=maybe"}, []string{`autopipeline="maybe"`, "want true or false"}, "store"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := redis.Open(ctx, tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("Open succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if got := setting.Key(err); got != tc.key {
				t.Errorf("error %q names setting %q, want %q", err, got, tc.key)
			}
		})
	}
}

// go-redis's pool lines about an unreachable server go to the store's
// logger at debug level, not to stderr ahead of Open's error. Not
// parallel: go-redis has one logger per process (the last Open's).
func TestUnreachableLogsPoolAtDebug(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if s, err := redis.Open(ctx, redis.Config{URL: "redis://127.0.0.1:1/0?dial_timeout=2s&max_retries=-1", Logger: log}); err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded")
	}
	if !strings.Contains(buf.String(), "level=DEBUG") || !strings.Contains(buf.String(), "failed to dial") {
		t.Fatalf("store logger got %q, want go-redis's dial failure at debug level", buf.String())
	}
}

// Entity/key pairs that join to the same string must stay apart, and no
// key of ours may leave its prefix.
func TestKeyNamesAreUnambiguous(t *testing.T) {
	t.Parallel()
	s, prefix := openWithPrefix(t)
	ctx := context.Background()
	a := store.Key{Entity: "a/b", Key: "c"}
	b := store.Key{Entity: "a", Key: "b/c"}
	la, _, err := s.Acquire(ctx, a, "w", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, la, store.Commit{Version: 3, RemoteID: "ra"}); err != nil {
		t.Fatal(err)
	}
	_, st, err := s.Acquire(ctx, b, "w", time.Minute, 0)
	if err != nil {
		t.Fatalf("Acquire of a pair joining to the same string: %v", err)
	}
	if st.AppliedVersion != 0 {
		t.Errorf("state of %s leaked into %s: %+v", a, b, st)
	}
	// The hash and the token counter share a hash tag (cluster slot).
	names, err := s.Client().Keys(ctx, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 4 {
		t.Errorf("keys under the prefix: %q, want 4 (two hashes, two counters)", names)
	}
	tags := map[string]int{}
	for _, name := range names {
		open, close := strings.Index(name, "{"), strings.Index(name, "}")
		if open < 0 || close < open {
			t.Errorf("key %q has no hash tag", name)
			continue
		}
		tags[name[open:close+1]]++
	}
	for tag, n := range tags {
		if n != 2 {
			t.Errorf("hash tag %s used by %d keys, want 2 (state and token)", tag, n)
		}
	}
}

// A write in doubt recorded by the previous version (an action field, the
// time in RFC 3339, no failure count) is read as in doubt with no failures;
// the new scripts count on it and replace it.
func TestIntentOfThePreviousVersion(t *testing.T) {
	t.Parallel()
	s, prefix := openWithPrefix(t)
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	hash, counter := prefix+":s:{listing/old}", prefix+":t:{listing/old}"
	if err := s.Client().HSet(ctx, hash, "v", "2", "r", "r2", "d", "0", "iv", "3", "ia", "update", "it", "7", "iat", at.Format(time.RFC3339Nano), "rp", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Client().Set(ctx, counter, "7", 0).Err(); err != nil {
		t.Fatal(err)
	}
	k := store.Key{Entity: "listing", Key: "old"}
	l, st, err := s.Acquire(ctx, k, "w1", time.Minute, 3)
	if err != nil {
		t.Fatal(err)
	}
	if st.AppliedVersion != 2 || st.Intent == nil || *st.Intent != (store.Intent{Version: 3, Token: 7, At: st.Intent.At}) || !st.Intent.At.Equal(at) {
		t.Fatalf("old intent read as %+v in %+v; want version 3 token 7 at %s, no failures", st.Intent, st, at)
	}
	if err := s.ReleaseFailed(ctx, l); err != nil {
		t.Fatal(err)
	}
	l, st, err = s.Acquire(ctx, k, "w2", time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Intent == nil || st.Intent.Version != 3 || st.Intent.Failures != 1 {
		t.Fatalf("intent after a failure = %+v, want version 3 with 1 failure", st.Intent)
	}
	if err := s.Release(ctx, l); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Client().Exists(ctx, hash).Result(); err != nil || n != 1 {
		t.Fatalf("state hash missing: %d, %v", n, err)
	}
	if action, err := s.Client().HExists(ctx, hash, "ia").Result(); err != nil || action {
		t.Errorf("the old action field stayed after a new intent: %v, %v", action, err)
	}
	_, st, err = s.Acquire(ctx, k, "w3", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Intent == nil || st.Intent.Version != 4 || st.Intent.Token != l.Token || st.Intent.Failures != 0 {
		t.Fatalf("new intent = %+v, want version 4 token %d", st.Intent, l.Token)
	}
}

// BenchmarkAcquireCommit measures the engine's per-event store cost (Acquire
// then Commit, two script round trips) from parallel goroutines; RoundTrip is
// the baseline of one PING on the same client.
func BenchmarkAcquireCommit(b *testing.B) {
	s := openIsolated(b)
	b.Run("RoundTrip", func(b *testing.B) {
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Client().Ping(context.Background()).Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("AcquireCommit", func(b *testing.B) { storetest.BenchmarkAcquireCommit(b, s) })
}
