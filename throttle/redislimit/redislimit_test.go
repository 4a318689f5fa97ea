package redislimit_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/limitertest"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

func TestConformance(t *testing.T) {
	l := newLimiter(t)
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

func FuzzLimiter(f *testing.F) {
	l := newLimiter(f)
	limitertest.Fuzz(f, func(*testing.T) throttle.Limiter { return l })
}

// newLimiter opens a limiter under a prefix of its own, whose keys are
// deleted when the test ends.
func newLimiter(tb testing.TB) *redislimit.Limiter {
	url := testenv.Redis(tb)
	prefix := testenv.UniqueName("rl")
	l, err := redislimit.Open(context.Background(), redislimit.Config{URL: url, Prefix: prefix})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close(); deleteKeys(tb, url, prefix) })
	return l
}

// deleteKeys removes what the test left (long holds live for an hour).
func deleteKeys(t testing.TB, url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	// One DEL per page of keys: a fuzz run leaves tens of thousands.
	for cursor := uint64(0); ; {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+":*", 1000).Result()
		if err == nil && len(keys) > 0 {
			err = rdb.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Errorf("clean up keys %s:*: %v", prefix, err)
			return
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (redislimit.Config{}).WithDefaults().Validate(); err == nil {
		t.Fatal("empty URL accepted")
	}
	if err := (redislimit.Config{URL: "redis://x", Prefix: "a b"}).Validate(); err == nil {
		t.Fatal("prefix with a space accepted")
	}
	if err := (redislimit.Config{URL: "redis://x"}).WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
}

// A hold's rate outlives the hold (the learned limit a restarted fleet
// begins from) for a day, not a minute.
func TestHoldRateOutlivesTheHold(t *testing.T) {
	l, name := newLimiter(t), testenv.UniqueName("hold")
	ctx := context.Background()
	if err := l.Hold(ctx, name, time.Now().Add(time.Second), 480); err != nil {
		t.Fatal(err)
	}
	opts, err := goredis.ParseURL(testenv.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "*:throttle:{"+name+"}:hold").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("hold key not found: %v %v", keys, err)
	}
	var ttl time.Duration
	for _, k := range keys {
		if d, err := rdb.PTTL(ctx, k).Result(); err == nil && d > ttl {
			ttl = d
		}
	}
	if ttl < 23*time.Hour {
		t.Fatalf("hold key expires in %v; want about a day after the hold ends", ttl)
	}
}
