// Package redislimit is the throttle.Limiter adapter on Redis: GCRA, hold
// check and probe lease are each one Lua script, so one atomic round trip
// judged by Redis's own clock (TIME). Keys expire by themselves once they
// no longer matter, so idle sinks leave nothing behind; a hold stays a day
// after it ended, because the rate stored with it is the limit the cluster
// learned, and a fleet started again begins from it.
//
// Key layout under the prefix P, the sink name escaped and in a hash tag so
// all keys of one name live on one cluster slot:
//
//	P:throttle:{name}:tat    theoretical arrival time, unix µs
//	P:throttle:{name}:hold   hash: u = hold end (unix µs), r = rate to resume at
//	P:throttle:{name}:probe  probe lease owner, with PX ttl
//
// github.com/go-redis/redis_rate implements GCRA too, but not the hold
// check inside the same script, and it is not a dependency of this module.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/redislog"
	"github.com/eventsync/eventsync/throttle"
)

// Config configures Open.
type Config struct {
	// URL is a redis:// or rediss:// URL.
	URL string
	// Prefix starts every key; default "eventsync".
	Prefix string
	// Logger receives go-redis's own log at debug level (see
	// internal/redislog); nil means slog.Default().
	Logger *slog.Logger
}

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "eventsync"
	}
	return c
}

// Validate reports the first problem with c, naming the fix.
func (c Config) Validate() error {
	if c.URL == "" {
		return errors.New("redis limiter: URL is empty; want redis://host:6379/0")
	}
	if !prefixPattern.MatchString(c.Prefix) {
		return fmt.Errorf("redis limiter: prefix %q may hold only letters, digits and _ . : - (at most 64)", c.Prefix)
	}
	return nil
}

// Limiter is a throttle.Limiter on Redis. It is safe for concurrent use.
type Limiter struct {
	rdb     goredis.UniversalClient
	prefix  string
	ownConn bool
}

var _ throttle.Limiter = (*Limiter)(nil)

// New uses an existing client (for example the Redis state store's); Close
// does not close it.
func New(rdb goredis.UniversalClient, prefix string) (*Limiter, error) {
	cfg := Config{URL: "given", Prefix: prefix}.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Limiter{rdb: rdb, prefix: cfg.Prefix}, nil
}

// Open connects to cfg.URL. Close the limiter when done.
func Open(ctx context.Context, cfg Config) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts, err := goredis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis limiter: parse URL: %w; expected redis://[:password@]host:6379/db", err)
	}
	redislog.Route(cfg.Logger)
	rdb := goredis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("connect to Redis at %s: %w; is it running and is the password right?", opts.Addr, err)
	}
	return &Limiter{rdb: rdb, prefix: cfg.Prefix, ownConn: true}, nil
}

// Close closes the client if Open created it.
func (l *Limiter) Close() error {
	if !l.ownConn {
		return nil
	}
	if err := l.rdb.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis limiter: close: %w", err)
	}
	return nil
}

func (l *Limiter) key(name, kind string) string {
	return l.prefix + ":throttle:{" + url.PathEscape(name) + "}:" + kind
}

// takeScript: KEYS tat, hold; ARGV interval µs, burst, n, all clamped by
// throttle first: interval × burst stays below 10^15 µs, so every sum here
// is an exact integer in Lua's doubles (up to 2^53). Returns {granted, wait
// µs}: as many of n calls as conform (throttle.GCRA), or 0 and the wait
// for one. Integers are formatted with %d because Lua's tostring would
// print large numbers in exponent form and lose microseconds.
var takeScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = tonumber(redis.call('HGET', KEYS[2], 'u') or '0')
if held > now then return {0, held - now} end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local free = math.floor((burst * interval - (tat - now)) / interval)
if free < 1 then return {0, tat + interval - burst * interval - now} end
local granted = math.min(free, n)
local newtat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', newtat), 'PX', math.floor((newtat - now) / 1000) + 1000)
return {granted, 0}
`)

// holdScript: KEYS hold; ARGV until µs, rate (throttle.HoldRate's, 0:
// none). Keeps the later of the two ends and the rate as
// throttle.MergeHoldRate does; writes nothing when both have ended. The
// rate is stored with 17 digits, which read back to the same float64. The
// hash outlives the hold by a day (86,400,000 ms): its rate is the learned
// limit a restarted fleet begins from.
var holdScript = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
local currate = tonumber(redis.call('HGET', KEYS[1], 'r') or '0')
local untilus = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local active = cur > now
local newrate = rate
if rate <= 0 then
  if active then newrate = currate else newrate = 0 end
elseif active and currate > 0 then
  newrate = math.min(currate, rate)
end
local newu = cur
if untilus > cur then newu = untilus end
if newu > now then
  redis.call('HSET', KEYS[1], 'u', string.format('%d', newu), 'r', string.format('%.17g', newrate))
  redis.call('PEXPIRE', KEYS[1], math.floor((newu - now) / 1000) + 86400000)
end
return 1
`)

// probeScript: KEYS probe; ARGV owner, ttl ms (0: give the lease up).
var probeScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
`)

// Take implements throttle.Limiter.
func (l *Limiter) Take(ctx context.Context, name string, rate float64, burst, n int) (int, time.Duration, error) {
	interval := throttle.EmissionInterval(rate).Microseconds()
	res, err := takeScript.Run(ctx, l.rdb, []string{l.key(name, "tat"), l.key(name, "hold")}, interval, throttle.ClampBurst(burst), throttle.ClampBurst(n)).Int64Slice()
	if err != nil {
		return 0, 0, fmt.Errorf("redis limiter: take %q: %w", name, err)
	}
	if len(res) != 2 || res[0] < 0 {
		return 0, 0, fmt.Errorf("redis limiter: take %q: script returned %v, want a count and a wait", name, res)
	}
	if res[0] > 0 {
		return int(res[0]), 0, nil
	}
	return 0, micros(res[1]), nil
}

// micros converts a wait in microseconds, at least 1µs (a refusal always
// waits) and saturating rather than overflowing.
func micros(us int64) time.Duration {
	return time.Duration(max(1, min(us, math.MaxInt64/int64(time.Microsecond)))) * time.Microsecond
}

// Hold implements throttle.Limiter.
func (l *Limiter) Hold(ctx context.Context, name string, until time.Time, rate float64) error {
	until = throttle.ClampHoldEnd(time.Now(), until)
	if err := holdScript.Run(ctx, l.rdb, []string{l.key(name, "hold")}, until.UnixMicro(), strconv.FormatFloat(throttle.HoldRate(rate), 'g', -1, 64)).Err(); err != nil {
		return fmt.Errorf("redis limiter: hold %q: %w", name, err)
	}
	return nil
}

// HeldUntil implements throttle.Limiter.
func (l *Limiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	v, err := l.rdb.HMGet(ctx, l.key(name, "hold"), "u", "r").Result()
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("redis limiter: read hold of %q: %w", name, err)
	}
	return parseHold(name, v)
}

// parseHold decodes HMGET u r; a missing hold is the zero time.
func parseHold(name string, v []any) (time.Time, float64, error) {
	if len(v) != 2 || v[0] == nil {
		return time.Time{}, 0, nil
	}
	us, err := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("redis limiter: hold of %q is %q, not unix microseconds: %w", name, v[0], err)
	}
	var rate float64
	if v[1] != nil {
		if rate, err = strconv.ParseFloat(fmt.Sprint(v[1]), 64); err != nil || rate < 0 || math.IsNaN(rate) {
			return time.Time{}, 0, fmt.Errorf("redis limiter: hold rate of %q is %q, not a rate", name, v[1])
		}
	}
	return time.UnixMicro(us), throttle.HoldRate(rate), nil
}

// TryProbe implements throttle.Limiter.
func (l *Limiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	// Whole milliseconds, rounded up: a lease shorter than 1ms is 1ms.
	ttl = throttle.ClampSpan(ttl)
	ms := int64((ttl + time.Millisecond - 1) / time.Millisecond)
	n, err := probeScript.Run(ctx, l.rdb, []string{l.key(name, "probe")}, owner, ms).Int64()
	if err != nil {
		return false, fmt.Errorf("redis limiter: probe lease of %q: %w", name, err)
	}
	return n == 1, nil
}
