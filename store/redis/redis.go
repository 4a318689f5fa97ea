// Package redis is the fast state-store adapter on Redis. Each lease
// operation (Acquire, Extend, Commit, Release, ReleaseFailed) is one Lua script,
// atomic on the server; the scripts of concurrent calls share pipelines
// (go-redis's autopipeliner), so hundreds of in-flight events cost Redis and
// the worker a few round trips instead of one each. Lease expiry is judged
// by Redis's own clock (TIME) stored in the key's hash, never by key TTLs,
// because the hash also holds durable state; a per-key token counter that
// is never deleted keeps fencing tokens increasing after releases.
//
// Redis forgets everything written since the last save when it restarts
// unless AOF (appendonly yes) or RDB snapshots are on; a forgotten applied
// version lets a stale event overwrite newer data. Open logs a warning when
// the server has no persistence; see CheckPersistence.
//
// Key layout under the prefix P, with entity and key escaped so that no
// entity/key pair can be confused with another and no glob or hash-tag
// character leaks through (names are cluster-safe: a key's hash and its
// token counter share the hash tag):
//
//	P:s:{entity/key}  hash: applied version, remote id, intent, repair flag (and the token it was set under), lease
//	P:t:{entity/key}  string: the fencing-token counter, also the current token
//	P:c:name          string with PX ttl: a control record
package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/redislog"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/store"
)

// tlsKey is the configuration key of the store's TLS settings.
const tlsKey = "store_tls"

// DefaultPoolSize lets hundreds of in-flight events share few connections:
// every call holds one for a single round trip.
const DefaultPoolSize = 64

// Config configures the Redis store.
type Config struct {
	// URL is a redis:// or rediss:// URL, e.g. redis://:secret@cache:6379/0.
	URL string
	// Prefix starts every key eventsync writes. Default "eventsync".
	Prefix string
	// PoolSize caps connections; 0 means the URL's pool_size or DefaultPoolSize.
	PoolSize int
	// NoAutoPipeline sends every lease script on its own instead of sharing
	// pipelines with concurrent calls (go-redis marks its autopipeliner
	// experimental; this is the way back if it misbehaves).
	NoAutoPipeline bool
	// TLS verifies a rediss:// connection (eventsync.TLSConfig, YAML key
	// store_tls): a custom certificate authority, a client certificate
	// for a server started with tls-auth-clients. Zero: the system's
	// authorities.
	TLS tlsconf.Config
	// Logger receives the persistence warning, and go-redis's own log at
	// debug level (see internal/redislog: go-redis has one logger per
	// process); nil means slog.Default().
	Logger *slog.Logger
}

var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// WithDefaults returns c with unset fields filled in.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "eventsync"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first problem with c, naming the fix.
func (c Config) Validate() error {
	if c.URL == "" {
		return setting.Errorf("store", "redis store: URL is empty; want redis://host:6379/0")
	}
	if !prefixPattern.MatchString(c.Prefix) {
		return fmt.Errorf("redis store: prefix %q may hold only letters, digits and _ . : - (at most 64)", c.Prefix)
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("redis store: PoolSize %d must not be negative", c.PoolSize)
	}
	if err := c.TLS.Validate(tlsKey); err != nil {
		return err
	}
	if !c.TLS.IsZero() && !strings.HasPrefix(strings.ToLower(c.URL), "rediss://") {
		return setting.Errorf("store", "redis store: TLS settings are given but the store URL %s is not rediss://", redact.URL(c.URL))
	}
	return nil
}

// Store is a store.Store on Redis. It is safe for concurrent use.
type Store struct {
	rdb    *goredis.Client
	pipe   *goredis.AutoPipeliner // the lease scripts; nil runs them on rdb
	log    *slog.Logger
	prefix string
}

var _ store.Store = (*Store)(nil)

// Open connects to Redis, checks its persistence (warning when it has none)
// and returns the store. Close it when done.
func Open(ctx context.Context, cfg Config) (_ *Store, err error) {
	secrets := redact.NewScrubber(cfg.URL) // no error or log line shows them
	defer func() { err = secrets.Error(err) }()
	cfg = cfg.WithDefaults()
	cfg.Logger = secrets.Logger(cfg.Logger)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rawURL, noAutoPipeline, err := takeAutoPipelineParam(cfg.URL)
	if err != nil {
		return nil, err
	}
	cfg.NoAutoPipeline = cfg.NoAutoPipeline || noAutoPipeline
	opts, err := goredis.ParseURL(rawURL)
	if err != nil {
		return nil, setting.Errorf("store", "redis store: parse URL: %w; want redis://[:password@]host:6379/db", err)
	}
	switch {
	case cfg.PoolSize > 0:
		opts.PoolSize = cfg.PoolSize
	case opts.PoolSize == 0:
		opts.PoolSize = DefaultPoolSize
	}
	if !cfg.TLS.IsZero() {
		tlsCfg, err := cfg.TLS.Build(tlsKey)
		if err != nil {
			return nil, fmt.Errorf("redis store: %w", err)
		}
		if tlsCfg.ServerName == "" && opts.TLSConfig != nil {
			tlsCfg.ServerName = opts.TLSConfig.ServerName // the URL's host
		}
		opts.TLSConfig = tlsCfg
	}
	redislog.Route(cfg.Logger)
	rdb := goredis.NewClient(opts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		cerr := tlsconf.Explain(err, tlsKey, cfg.TLS)
		var reply goredis.Error // the server answered: TLS worked
		if !tlsconf.IsCertificateProblem(cerr) && opts.TLSConfig != nil && !errors.As(err, &reply) {
			// A refused client certificate shows after the handshake, its
			// alert often lost to the reset of the first command: a
			// probe that writes nothing hears it.
			if perr := tlsconf.Probe(opts.Addr, opts.TLSConfig, 5*time.Second); perr != nil {
				cerr = tlsconf.Explain(perr, tlsKey, cfg.TLS)
			}
		}
		if tlsconf.IsCertificateProblem(cerr) {
			return nil, fmt.Errorf("connect to Redis at %s: TLS handshake failed: %w", opts.Addr, cerr)
		}
		return nil, setting.Errorf("store", "connect to Redis at %s: %w; is it running and is the password right?", opts.Addr, err)
	}
	s := &Store{rdb: rdb, log: cfg.Logger, prefix: cfg.Prefix}
	if !cfg.NoAutoPipeline {
		if s.pipe, err = rdb.AsyncAutoPipeline(); err != nil {
			_ = rdb.Close()
			return nil, fmt.Errorf("redis store: start the autopipeliner: %w", err)
		}
	}
	p, err := CheckPersistence(ctx, rdb)
	if err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis store at %s: %w", opts.Addr, err)
	}
	if warning := p.Warning(opts.Addr); warning != "" {
		s.log.Warn(warning)
	}
	return s, nil
}

// takeAutoPipelineParam removes eventsync's own autopipeline=true|false
// query parameter, which go-redis would reject, from a store URL.
func takeAutoPipelineParam(rawURL string) (rest string, off bool, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || !u.Query().Has("autopipeline") {
		return rawURL, false, nil // go-redis reports a malformed URL
	}
	q := u.Query()
	on, err := strconv.ParseBool(q.Get("autopipeline"))
	if err != nil {
		return "", false, setting.Errorf("store", "redis store: autopipeline=%q in the URL: want true or false", q.Get("autopipeline"))
	}
	q.Del("autopipeline")
	u.RawQuery = q.Encode()
	return u.String(), !on, nil
}

// Close closes the client. It is safe to call more than once.
func (s *Store) Close() error {
	if err := s.rdb.Close(); err != nil && !errors.Is(err, goredis.ErrClosed) {
		return fmt.Errorf("redis store: close: %w", err)
	}
	return nil
}

// Client exposes the Redis client for health checks.
func (s *Store) Client() *goredis.Client { return s.rdb }

// Persistence is what a Redis server does to survive a restart.
type Persistence struct {
	AppendOnly bool   // AOF is on
	Save       string // RDB snapshot schedule; empty means no snapshots
	// SaveKnown is false when CONFIG is disabled (managed Redis) and only
	// INFO was available, which does not show the snapshot schedule.
	SaveKnown bool
}

// Durable reports whether the server keeps applied versions across restarts.
func (p Persistence) Durable() bool { return p.AppendOnly || (p.SaveKnown && p.Save != "") }

// Warning returns the message to log for a server at addr without
// persistence, or "" when it has some.
func (p Persistence) Warning(addr string) string {
	if p.Durable() {
		return ""
	}
	save := strconv.Quote(p.Save)
	if !p.SaveKnown {
		save = "unknown, CONFIG is disabled"
	}
	return fmt.Sprintf("Redis at %s has no persistence (appendonly no, save %s): a restart forgets applied versions and lets stale events through; enable appendonly yes or use the PostgreSQL store", addr, save)
}

// CheckPersistence asks the server whether AOF or RDB snapshots are on,
// through CONFIG GET and, where CONFIG is disabled, INFO persistence.
func CheckPersistence(ctx context.Context, rdb goredis.UniversalClient) (Persistence, error) {
	aof, aofErr := rdb.ConfigGet(ctx, "appendonly").Result()
	save, saveErr := rdb.ConfigGet(ctx, "save").Result()
	if aofErr == nil && saveErr == nil {
		return Persistence{AppendOnly: aof["appendonly"] == "yes", Save: save["save"], SaveKnown: true}, nil
	}
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return Persistence{}, fmt.Errorf("check persistence: CONFIG GET failed (%v) and INFO persistence failed: %w", errors.Join(aofErr, saveErr), err)
	}
	return parseInfoPersistence(info), nil
}

// parseInfoPersistence reads INFO persistence output. It shows whether AOF
// is on but not the RDB snapshot schedule.
func parseInfoPersistence(info string) Persistence {
	p := Persistence{}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "aof_enabled:"); ok {
			p.AppendOnly = v == "1"
		}
	}
	return p
}

// escaper makes an entity or key safe inside a key name: no '/' separator,
// no hash-tag braces, no glob characters, reversibly.
var (
	escaper   = strings.NewReplacer("%", "%25", "/", "%2F", "{", "%7B", "}", "%7D", "*", "%2A", "?", "%3F", "[", "%5B", "]", "%5D", "\\", "%5C")
	unescaper = strings.NewReplacer("%25", "%", "%2F", "/", "%7B", "{", "%7D", "}", "%2A", "*", "%3F", "?", "%5B", "[", "%5D", "]", "%5C", "\\")
	// globEscaper makes a control-name prefix literal in a SCAN pattern.
	globEscaper = strings.NewReplacer("*", "\\*", "?", "\\?", "[", "\\[", "]", "\\]", "\\", "\\\\")
)

// keyNames returns the key's state hash and token counter names, built in
// one allocation (every lease call names both).
func (s *Store) keyNames(k store.Key) (state, token string) {
	tag := escaper.Replace(k.Entity) + "/" + escaper.Replace(k.Key)
	var b strings.Builder
	b.Grow(2 * (len(s.prefix) + len(":s:{}") + len(tag)))
	for _, kind := range [2]string{":s:{", ":t:{"} {
		b.WriteString(s.prefix)
		b.WriteString(kind)
		b.WriteString(tag)
		b.WriteByte('}')
	}
	both := b.String()
	return both[:len(both)/2], both[len(both)/2:]
}

// Control records and their index share one hash tag, so the index and the
// records stay in one slot on a cluster and can change in one transaction.
func (s *Store) controlKey(name string) string { return s.prefix + ":c:{ctl}:" + name }

// controlIndex is a sorted set of control names scored by expiry (unix ms,
// +inf for none): ListControl reads it instead of scanning the keyspace,
// which holds one hash per entity and may be millions of keys.
func (s *Store) controlIndex() string { return s.prefix + ":c:{ctl}" }

// stateFieldNames are the hash fields of a key's state, in the order
// decodeState reads them: applied version, remote id, deleted, last event,
// the intent (version, lease token, time, failures) and the repair flag.
// Intent time and lease expiry are milliseconds of Redis's clock (Lua numbers
// print exactly only up to 14 digits, so microseconds would be mangled);
// intents written before failures were counted hold an RFC 3339 time and an
// action field 'ia' that is no longer read.
var stateFieldNames = []string{"v", "r", "d", "e", "iv", "it", "iat", "if", "rp"}

// stateFields is stateFieldNames as Lua arguments.
var stateFields = "'" + strings.Join(stateFieldNames, "', '") + "'"

// luaPrelude is shared by the scripts: the server clock in milliseconds and
// a comparison of decimal version strings that stays exact beyond 2^53.
const luaPrelude = `
local function now_ms()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function version_less(a, b)
	if #a ~= #b then return #a < #b end
	return a < b
end
`

var (
	// KEYS: state hash, token counter. ARGV: owner, ttl ms, version
	// (decimal, "0" for none). Records version as the intent when it is
	// above the applied version and the standing intent.
	// Returns {2, 0, 0, state...} when version has nothing to write
	// (store.NothingToWrite; no lease taken, nothing changed), {0,
	// remaining ms} when locked, else {1, token, expires ms, state
	// before...}.
	acquireScript = goredis.NewScript(luaPrelude + `
local st = redis.call('HMGET', KEYS[1], ` + stateFields + `)
local version = ARGV[3]
if version ~= '0' and st[9] ~= '1' then
	local applied = st[1] or '0'
	local superseded = st[5] and version_less(version, st[5]) and version_less(applied, st[5])
	if superseded or not version_less(applied, version) then
		return {2, 0, 0, st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9]}
	end
end
local now = now_ms()
local lease = redis.call('HMGET', KEYS[1], 'lo', 'lx')
local expires_at = tonumber(lease[2]) or 0
if lease[1] and lease[1] ~= ARGV[1] and expires_at > now then
	return {0, expires_at - now}
end
local token = redis.call('INCR', KEYS[2])
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lo', ARGV[1], 'lx', expires)
if version ~= '0' and version_less(st[1] or '0', version) and (not st[5] or version_less(st[5], version)) then
	redis.call('HSET', KEYS[1], 'iv', version, 'it', string.format('%d', token), 'iat', string.format('%d', now), 'if', '0')
	redis.call('HDEL', KEYS[1], 'ia')
end
return {1, token, expires, st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9]}
`)
	// KEYS: state hash, token counter. ARGV: token, ttl ms.
	// Returns the new expiry, or -1 when fenced.
	extendScript = goredis.NewScript(luaPrelude + `
if redis.call('GET', KEYS[2]) ~= ARGV[1] or not redis.call('HGET', KEYS[1], 'lo') then
	return -1
end
local expires = now_ms() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lx', expires)
return expires
`)
	// KEYS: state hash, token counter. ARGV: token, version, remote id, deleted, event.
	// Returns 1, 0 when fenced, or {-1, applied} when stale.
	commitScript = goredis.NewScript(luaPrelude + `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local applied = redis.call('HGET', KEYS[1], 'v') or '0'
if version_less(ARGV[2], applied) then return {-1, applied} end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3], 'd', ARGV[4], 'e', ARGV[5])
-- A repair flag set under this very lease stays (see store.Store.Commit).
if (tonumber(redis.call('HGET', KEYS[1], 'rpt')) or 0) < tonumber(ARGV[1]) then
	redis.call('HSET', KEYS[1], 'rp', '0')
end
-- An intent above the committed version (a repair re-applying an older
-- state) stays in doubt.
local intent = redis.call('HGET', KEYS[1], 'iv')
if intent and not version_less(ARGV[2], intent) then
	redis.call('HDEL', KEYS[1], 'iv', 'ia', 'it', 'iat', 'if')
end
redis.call('HDEL', KEYS[1], 'lo', 'lx')
return 1
`)
	// KEYS: state hash, token counter. Flags the key and remembers the
	// token current now.
	markRepairScript = goredis.NewScript(`
redis.call('HSET', KEYS[1], 'rp', '1', 'rpt', redis.call('GET', KEYS[2]) or '0')
return 1
`)
	// KEYS: state hash, token counter. ARGV: token. Returns 1, or 0 when
	// the lease was lost (left alone).
	releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'lo', 'lx')
return 1
`)
	// KEYS: state hash, token counter. ARGV: token. Releases and counts a
	// failure against the standing intent only while the lease is held: one
	// released already (a retried call) counts nothing. Returns 1, or 0
	// when the lease was lost (left alone, nothing counted).
	releaseFailedScript = goredis.NewScript(`
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'lo') == 1 then
	redis.call('HDEL', KEYS[1], 'lo', 'lx')
	if redis.call('HEXISTS', KEYS[1], 'iv') == 1 then
		redis.call('HINCRBY', KEYS[1], 'if', 1)
	end
end
return 1
`)
)

// scriptHashes holds each lease script's SHA1 boxed once, so no EVALSHA
// allocates it again.
var scriptHashes = func() map[*goredis.Script]any {
	m := map[*goredis.Script]any{}
	for _, sc := range []*goredis.Script{acquireScript, extendScript, commitScript, markRepairScript, releaseScript, releaseFailedScript} {
		m[sc] = sc.Hash()
	}
	return m
}()

// run executes one lease script. Through the autopipeliner the call joins
// the next pipeline; ctx bounds the wait, but a call already queued still
// runs on Redis after ctx ends, as a call whose reply is lost would: fencing
// tokens and versions keep that safe, and at worst a lease nobody uses
// blocks its key until its TTL. The EVALSHA is built here rather than by
// script.EvalSha because only Submit returns a future whose wait honours ctx.
//
// Every script's keys are the key's state hash and token counter. The
// arguments are copied straight into the command (args itself does not
// escape): this runs twice for every event that writes.
func (s *Store) run(ctx context.Context, script *goredis.Script, k store.Key, args ...any) *goredis.Cmd {
	if err := ctx.Err(); err != nil {
		return failedCmd(ctx, err)
	}
	state, token := s.keyNames(k)
	cmdArgs := make([]any, 5, 5+len(args))
	cmdArgs[0], cmdArgs[1], cmdArgs[2], cmdArgs[3], cmdArgs[4] = "evalsha", scriptHashes[script], 2, state, token
	cmdArgs = append(cmdArgs, args...)
	if s.pipe == nil {
		return script.Run(ctx, s.rdb, []string{state, token}, cmdArgs[5:]...)
	}
	cmd := goredis.NewCmd(ctx, cmdArgs...)
	cmd.SetFirstKeyPos(3)
	err := s.pipe.Submit(ctx, cmd).WaitContext(ctx)
	switch {
	case err == nil:
		return cmd
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// The pipeliner may still write the command's result later: the
		// caller gets a command of its own that holds the ctx error.
		return failedCmd(ctx, err)
	case goredis.HasErrorPrefix(err, "NOSCRIPT"):
		// Redis restarted or its script cache was flushed: EVAL loads it.
		return script.Eval(ctx, s.rdb, []string{state, token}, cmdArgs[5:]...)
	}
	return cmd
}

func failedCmd(ctx context.Context, err error) *goredis.Cmd {
	cmd := goredis.NewCmd(ctx)
	cmd.SetErr(err)
	return cmd
}

// ttlMillis rounds ttl up to whole milliseconds, at least one.
func ttlMillis(ttl time.Duration) int64 {
	return int64(max((ttl+time.Millisecond-1)/time.Millisecond, 1))
}

// Acquire implements store.Store.
func (s *Store) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	if ttl <= 0 {
		return store.Lease{}, store.State{}, fmt.Errorf("redis store: acquire %s: ttl %s must be positive", k, ttl)
	}
	// The script compares non-negative decimal strings; no version at or
	// below 0 is ever above the applied one.
	res, err := s.run(ctx, acquireScript, k, owner, ttlMillis(ttl),
		strconv.FormatInt(max(version, 0), 10)).Slice()
	if err != nil {
		return store.Lease{}, store.State{}, fmt.Errorf("redis store: acquire %s: %w", k, err)
	}
	if len(res) == 2 && res[0] == int64(0) {
		remaining, _ := res[1].(int64)
		return store.Lease{}, store.State{}, &store.LockedError{Key: k, RetryAfter: time.Duration(max(remaining, 1)) * time.Millisecond}
	}
	if len(res) != 12 || res[0] != int64(1) && res[0] != int64(2) {
		return store.Lease{}, store.State{}, fmt.Errorf("redis store: acquire %s: unexpected script reply %v", k, res)
	}
	st, err := decodeState(res[3:])
	if err != nil {
		return store.Lease{}, store.State{}, fmt.Errorf("redis store: acquire %s: %w", k, err)
	}
	if res[0] == int64(2) { // nothing to write: no lease taken
		return store.Lease{Key: k, Owner: owner}, st, nil
	}
	token, _ := res[1].(int64)
	expires, _ := res[2].(int64)
	return store.Lease{Key: k, Owner: owner, Token: token, Expires: time.UnixMilli(expires)}, st, nil
}

// decodeState reads the stateFields values in order; nil means unset.
func decodeState(vals []any) (store.State, error) {
	str := func(i int) (string, bool) {
		v, ok := vals[i].(string)
		return v, ok
	}
	var st store.State
	var err error
	if v, ok := str(0); ok {
		if st.AppliedVersion, err = strconv.ParseInt(v, 10, 64); err != nil {
			return store.State{}, fmt.Errorf("corrupt applied version %q: %w", v, err)
		}
	}
	st.RemoteID, _ = str(1)
	if v, _ := str(2); v == "1" {
		st.Deleted = true
	}
	if v, ok := str(3); ok && v != "" {
		st.LastEvent = []byte(v)
	}
	if v, ok := str(4); ok {
		in := store.Intent{}
		if in.Version, err = strconv.ParseInt(v, 10, 64); err != nil {
			return store.State{}, fmt.Errorf("corrupt intent version %q: %w", v, err)
		}
		if t, ok := str(5); ok {
			if in.Token, err = strconv.ParseInt(t, 10, 64); err != nil {
				return store.State{}, fmt.Errorf("corrupt intent token %q: %w", t, err)
			}
		}
		if at, ok := str(6); ok {
			if in.At, err = parseIntentTime(at); err != nil {
				return store.State{}, err
			}
		}
		if f, ok := str(7); ok {
			if in.Failures, err = strconv.Atoi(f); err != nil || in.Failures < 0 {
				return store.State{}, fmt.Errorf("corrupt intent failure count %q", f)
			}
		}
		st.Intent = &in
	}
	if v, _ := str(8); v == "1" {
		st.RepairNeeded = true
	}
	return st, nil
}

// parseIntentTime reads an intent's time: milliseconds of Redis's clock, or
// RFC 3339 as versions before failure counting wrote it.
func parseIntentTime(at string) (time.Time, error) {
	if ms, err := strconv.ParseInt(at, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return time.Time{}, fmt.Errorf("corrupt intent time %q: %w", at, err)
	}
	return t, nil
}

func tokenArg(l store.Lease) string { return strconv.FormatInt(l.Token, 10) }

// Extend implements store.Store.
func (s *Store) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	if ttl <= 0 {
		return store.Lease{}, fmt.Errorf("redis store: extend %s: ttl %s must be positive", l.Key, ttl)
	}
	expires, err := s.run(ctx, extendScript, l.Key, tokenArg(l), ttlMillis(ttl)).Int64()
	if err != nil {
		return store.Lease{}, fmt.Errorf("redis store: extend %s: %w", l.Key, err)
	}
	if expires < 0 {
		return store.Lease{}, fmt.Errorf("redis store: extend %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	l.Expires = time.UnixMilli(expires)
	return l, nil
}

// Commit implements store.Store.
func (s *Store) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	deleted := "0"
	if c.Deleted {
		deleted = "1"
	}
	res, err := s.run(ctx, commitScript, l.Key, tokenArg(l),
		c.Version, c.RemoteID, deleted, c.Event).Result()
	if err != nil {
		return fmt.Errorf("redis store: commit %s version %d: %w", l.Key, c.Version, err)
	}
	switch r := res.(type) {
	case int64:
		if r == 1 {
			return nil
		}
		return fmt.Errorf("redis store: commit %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	case []any:
		return fmt.Errorf("redis store: commit %s version %d, applied %v: %w", l.Key, c.Version, r[len(r)-1], store.ErrStaleCommit)
	default:
		return fmt.Errorf("redis store: commit %s: unexpected script reply %v", l.Key, res)
	}
}

// Release implements store.Store.
func (s *Store) Release(ctx context.Context, l store.Lease) error {
	held, err := s.run(ctx, releaseScript, l.Key, tokenArg(l)).Int64()
	if err != nil {
		return fmt.Errorf("redis store: release %s: %w", l.Key, err)
	}
	if held == 0 {
		return fmt.Errorf("redis store: release %s token %d: %w", l.Key, l.Token, store.ErrFenced)
	}
	return nil
}

// ReleaseFailed implements store.Store.
func (s *Store) ReleaseFailed(ctx context.Context, l store.Lease) error {
	held, err := s.run(ctx, releaseFailedScript, l.Key, tokenArg(l)).Int64()
	if err != nil {
		return fmt.Errorf("redis store: release %s after a failure: %w", l.Key, err)
	}
	if held == 0 {
		return fmt.Errorf("redis store: release %s token %d after a failure: %w", l.Key, l.Token, store.ErrFenced)
	}
	return nil
}

// MarkRepair implements store.Store.
func (s *Store) MarkRepair(ctx context.Context, k store.Key) error {
	if err := s.run(ctx, markRepairScript, k).Err(); err != nil {
		return fmt.Errorf("redis store: mark %s for repair: %w", k, err)
	}
	return nil
}

// scanCount is the SCAN batch hint.
const scanCount = 1000

// Scan implements store.Store. It walks the keyspace with SCAN (cluster-safe,
// no per-entity index to keep consistent), so its cost grows with the whole
// prefix, not the entity; it runs rarely. SCAN may return a name twice while
// Redis rehashes, so visited names are remembered (about 64 bytes per key).
func (s *Store) Scan(ctx context.Context, entity string, fn func(store.Key, store.State) error) error {
	head := s.prefix + ":s:{" + escaper.Replace(entity) + "/"
	match := globEscaper.Replace(head) + "*"
	var cursor uint64
	seen := map[string]struct{}{}
	for {
		found, next, err := s.rdb.ScanType(ctx, cursor, match, scanCount, "hash").Result()
		if err != nil {
			return fmt.Errorf("redis store: scan %s: %w", entity, err)
		}
		names := found[:0]
		for _, name := range found {
			if _, dup := seen[name]; !dup {
				seen[name] = struct{}{}
				names = append(names, name)
			}
		}
		if len(names) > 0 {
			pipe := s.rdb.Pipeline()
			cmds := make([]*goredis.SliceCmd, len(names))
			for i, name := range names {
				cmds[i] = pipe.HMGet(ctx, name, stateFieldNames...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("redis store: scan %s: read states: %w", entity, err)
			}
			for i, name := range names {
				escKey, ok := strings.CutSuffix(strings.TrimPrefix(name, head), "}")
				if !ok || strings.Contains(escKey, "/") {
					continue // not one of ours
				}
				st, err := decodeState(cmds[i].Val())
				if err != nil {
					return fmt.Errorf("redis store: scan %s: key %s: %w", entity, name, err)
				}
				if err := fn(store.Key{Entity: entity, Key: unescaper.Replace(escKey)}, st); err != nil {
					return err
				}
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// SetControl implements store.Control.
func (s *Store) SetControl(ctx context.Context, name string, value []byte, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("redis store: set control %q: negative ttl %s", name, ttl)
	}
	score := math.Inf(1)
	if ttl > 0 {
		score = float64(time.Now().Add(ttl).UnixMilli())
	}
	// ttl 0 is a SET without expiry, which also clears an old one.
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Set(ctx, s.controlKey(name), value, ttl)
		p.ZAdd(ctx, s.controlIndex(), goredis.Z{Score: score, Member: name})
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis store: set control %q: %w", name, err)
	}
	return nil
}

// GetControl implements store.Control.
func (s *Store) GetControl(ctx context.Context, name string) ([]byte, bool, error) {
	v, err := s.rdb.Get(ctx, s.controlKey(name)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("redis store: get control %q: %w", name, err)
	}
	return v, true, nil
}

// ListControl implements store.Control. It reads the control index, not
// the keyspace, and prunes index entries whose records expired (the index
// scores are this process's clock; Redis's own TTL decides what exists).
func (s *Store) ListControl(ctx context.Context, prefix string) (map[string][]byte, error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	if err := s.rdb.ZRemRangeByScore(ctx, s.controlIndex(), "-inf", "("+now).Err(); err != nil {
		return nil, fmt.Errorf("redis store: list control %q: prune index: %w", prefix, err)
	}
	all, err := s.rdb.ZRange(ctx, s.controlIndex(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis store: list control %q: %w", prefix, err)
	}
	var names []string
	for _, n := range all {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	out := map[string][]byte{}
	if len(names) == 0 {
		return out, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*goredis.StringCmd, len(names))
	for i, name := range names {
		cmds[i] = pipe.Get(ctx, s.controlKey(name))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis store: list control %q: %w", prefix, err)
	}
	for i, name := range names {
		v, err := cmds[i].Bytes()
		if errors.Is(err, goredis.Nil) {
			continue // expired: Redis's TTL is the truth
		}
		if err != nil {
			return nil, fmt.Errorf("redis store: list control %q: %w", prefix, err)
		}
		out[name] = v
	}
	return out, nil
}

// DeleteControl implements store.Control.
func (s *Store) DeleteControl(ctx context.Context, name string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.Del(ctx, s.controlKey(name))
		p.ZRem(ctx, s.controlIndex(), name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis store: delete control %q: %w", name, err)
	}
	return nil
}
