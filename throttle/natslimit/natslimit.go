// Package natslimit is the throttle.Limiter adapter on NATS JetStream KV,
// for the embedded (one-machine) mode and NATS deployments. One key per sink
// name holds the GCRA arrival time, the hold and the probe lease; every
// change is a compare-and-set on the key's revision, retried on conflict, so
// concurrent processes never lose an update.
//
// Clock assumption: NATS does not expose server time, so times are the
// calling process's clock. Skew between machines shifts holds and rate
// slots by the skew; keep clocks in sync (NTP). The bucket uses memory
// storage: losing throttle state in a server restart only costs one burst.
package natslimit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/eventsync/eventsync/internal/natsconn"
	"github.com/eventsync/eventsync/throttle"
)

// Config configures Open. Exactly one of URL and Conn is needed.
type Config struct {
	// URL of the NATS server, e.g. nats://127.0.0.1:4222; ignored when Conn is set.
	URL string
	// Conn is an existing connection (the embedded server's, the store's);
	// Close does not close it.
	Conn *nats.Conn
	// Bucket is the prefix of the bucket name "<Bucket>_throttle"; default "eventsync".
	Bucket string
	// Replicas of the bucket in a NATS cluster; default 1.
	Replicas int
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var bucketPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = "eventsync"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports configuration errors with the fix.
func (c Config) Validate() error {
	if c.URL == "" && c.Conn == nil {
		return errors.New("nats limiter: no NATS URL or connection given; want nats://host:4222")
	}
	if !bucketPattern.MatchString(c.Bucket) {
		return fmt.Errorf("nats limiter: bucket prefix %q may only contain letters, digits, '_' and '-'; choose another", c.Bucket)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("nats limiter: replicas %d out of range; use 1 to 5", c.Replicas)
	}
	return nil
}

// Limiter is a throttle.Limiter on NATS KV. It is safe for concurrent use.
type Limiter struct {
	nc      *nats.Conn
	ownConn bool
	kv      jetstream.KeyValue
	now     func() time.Time
}

var _ throttle.Limiter = (*Limiter)(nil)

// Open connects (unless cfg.Conn is given) and creates the bucket when missing.
func Open(ctx context.Context, cfg Config) (*Limiter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	l := &Limiter{nc: cfg.Conn, now: cfg.Now}
	if l.nc == nil {
		nc, err := natsconn.Connect(cfg.URL, "throttle", cfg.Logger)
		if err != nil {
			return nil, err
		}
		l.nc, l.ownConn = nc, true
	}
	js, err := jetstream.New(l.nc)
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("nats limiter: JetStream context: %w", err)
	}
	l.kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket + "_throttle",
		Description: "eventsync cluster-wide rate limits, holds and probe leases per sink",
		History:     1,
		Storage:     jetstream.MemoryStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("nats limiter: create bucket %s_throttle: %w; is JetStream enabled on the server (nats-server -js)?", cfg.Bucket, err)
	}
	return l, nil
}

// Close closes the connection if Open created it.
func (l *Limiter) Close() error {
	if l.ownConn {
		l.nc.Close()
	}
	return nil
}

// record is the value stored per name; times are unix nanoseconds.
type record struct {
	TAT        int64   `json:"tat,omitempty"`
	HeldUntil  int64   `json:"held_until,omitempty"`
	HoldRate   float64 `json:"hold_rate,omitempty"`
	ProbeOwner string  `json:"probe_owner,omitempty"`
	ProbeUntil int64   `json:"probe_until,omitempty"`
}

// decodeRecord parses a stored value; it never panics on foreign data.
func decodeRecord(data []byte) (record, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, fmt.Errorf("decode throttle record: %w", err)
	}
	return r, nil
}

func key(name string) string {
	if name == "" {
		return "_"
	}
	return "n" + base64.RawURLEncoding.EncodeToString([]byte(name))
}

// update runs fn on the current record and writes the result with a
// compare-and-set, retrying when another process wrote in between. fn
// returns false to leave the record unchanged.
func (l *Limiter) update(ctx context.Context, name string, fn func(now time.Time, r *record) bool) error {
	k := key(name)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r record
		var rev uint64
		entry, err := l.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			rev = entry.Revision()
			if r, err = decodeRecord(entry.Value()); err != nil {
				r = record{} // a corrupt record is overwritten, not fatal
			}
		}
		if !fn(l.now(), &r) {
			return nil
		}
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, k, data)
		} else {
			_, err = l.kv.Update(ctx, k, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		return err
	}
}

// Take implements throttle.Limiter.
func (l *Limiter) Take(ctx context.Context, name string, rate float64, burst, n int) (granted int, wait time.Duration, err error) {
	err = l.update(ctx, name, func(now time.Time, r *record) bool {
		if held := time.Unix(0, r.HeldUntil); r.HeldUntil != 0 && held.After(now) {
			granted, wait = 0, held.Sub(now)
			return false
		}
		var tat time.Time
		if r.TAT != 0 {
			tat = time.Unix(0, r.TAT)
		}
		var newTAT time.Time
		newTAT, granted, wait = throttle.GCRA(now, tat, rate, burst, n)
		if granted == 0 {
			return false
		}
		r.TAT = newTAT.UnixNano()
		return true
	})
	if err != nil {
		return 0, 0, fmt.Errorf("nats limiter: take %q: %w", name, err)
	}
	return granted, wait, nil
}

// Hold implements throttle.Limiter.
func (l *Limiter) Hold(ctx context.Context, name string, until time.Time, rate float64) error {
	err := l.update(ctx, name, func(now time.Time, r *record) bool {
		u := throttle.ClampHoldEnd(now, until).UnixNano()
		active := r.HeldUntil > now.UnixNano()
		if !active && u <= now.UnixNano() {
			return false // both ended: nothing to hold
		}
		newRate := throttle.MergeHoldRate(active, r.HoldRate, rate)
		newUntil := max(r.HeldUntil, u)
		if newUntil == r.HeldUntil && newRate == r.HoldRate {
			return false
		}
		r.HeldUntil, r.HoldRate = newUntil, newRate
		return true
	})
	if err != nil {
		return fmt.Errorf("nats limiter: hold %q: %w", name, err)
	}
	return nil
}

// HeldUntil implements throttle.Limiter.
func (l *Limiter) HeldUntil(ctx context.Context, name string) (time.Time, float64, error) {
	entry, err := l.kv.Get(ctx, key(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return time.Time{}, 0, nil
	}
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("nats limiter: read hold of %q: %w", name, err)
	}
	r, err := decodeRecord(entry.Value())
	if err != nil || r.HeldUntil == 0 {
		return time.Time{}, 0, err
	}
	return time.Unix(0, r.HeldUntil), throttle.HoldRate(r.HoldRate), nil
}

// TryProbe implements throttle.Limiter.
func (l *Limiter) TryProbe(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	var ok bool
	err := l.update(ctx, name, func(now time.Time, r *record) bool {
		if r.ProbeOwner != "" && r.ProbeOwner != owner && time.Unix(0, r.ProbeUntil).After(now) {
			ok = false
			return false
		}
		ok = true
		r.ProbeOwner, r.ProbeUntil = owner, now.Add(throttle.ClampSpan(ttl)).UnixNano()
		return true
	})
	if err != nil {
		return false, fmt.Errorf("nats limiter: probe lease of %q: %w", name, err)
	}
	return ok, nil
}
