package redislimit_test

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/throttle"
	"github.com/eventsync/eventsync/throttle/limitertest"
	"github.com/eventsync/eventsync/throttle/redislimit"
)

func TestConformance(t *testing.T) {
	url := testenv.Redis(t)
	prefix := testenv.UniqueName("rl")
	l, err := redislimit.Open(context.Background(), redislimit.Config{URL: url, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(); deleteKeys(t, url, prefix) })
	limitertest.Run(t, func(*testing.T) throttle.Limiter { return l })
}

// deleteKeys removes what the test left (long holds live for an hour).
func deleteKeys(t *testing.T, url, prefix string) {
	opts, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("clean up keys %s:*: %v", prefix, err)
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
