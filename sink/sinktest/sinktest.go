// Package sinktest is the conformance suite for the sink.Sink port: every
// sink (sink/httpsink, throttle.Sink as a decorator, and the Go sink you
// write for an API that needs code) runs it from its tests. A harness calls
// Run with a constructor that returns a fresh sink for each subtest:
//
//	func TestConformance(t *testing.T) {
//		sinktest.Run(t, func(t *testing.T) sinktest.Env {
//			s := mysink.New(sandboxURL(t)) // register cleanup with t.Cleanup
//			return sinktest.Env{Sink: s, Entity: "contact"}
//		})
//	}
//
// The suite checks the contract the engine relies on (see package sink):
// Create returns a non-empty remote id and is not assumed idempotent (two
// creates of one key may make two records, and Lookup by that external id
// then finds both); Lookup of an unknown key finds no ids and no error, and
// matches the whole key; Update keeps the record and its external id and,
// when the sink is a sink.Lister, a listing shows the new data; Update and
// Delete of a record that is gone return an error wrapping sink.ErrNotFound;
// Delete removes one record, so Lookup no longer finds it; keys with
// slashes, spaces, query and non-ASCII characters round-trip; calls are
// safe from many goroutines; a cancelled context makes every call return
// promptly with an error sink.Classify judges ClassCanceled, and a call
// whose context was cancelled before it began takes no effect.
//
// Two points the port leaves implicit are pinned down here: a Lister lists
// each record once with its external id and stops at the first error its
// callback returns, returning that error.
//
// # Failures
//
// The suite cannot make an arbitrary API fail, so a harness that can
// provides Env.Faults; the subtests that need it skip without one. With it
// the suite makes single requests fail with 400, 403, 408, 422, 429, 500,
// 502, 503 and 504, with and without Retry-After, and checks that each call
// returns the failure (no retry inside the sink: a create retried blindly
// makes a duplicate), that sink.Classify and sink.Retryable read the right
// class, retryability and Retry-After from it (return a *sink.Error with
// Op, Status, Retryable and RetryAfter set), and that the sink works again
// on the next call. It also stalls the API to check that a cancel reaches a
// call already waiting for an answer.
//
// For an API you cannot make fail on request, give your sink's HTTP client
// a Transport (its FailNext and Stall answer in place of the API) or put an
// httptest.Server in front of a sandbox. FakeAPIFaults adapts the fake API
// (package fakeapi) for HTTP sinks tested against it.
//
// # Decorators
//
// A decorator such as throttle.Sink runs the suite around a sink that passes
// it: it must hand the wrapped sink's failures back unchanged (throttle.Sink
// does, and holds the calls after a 429 or an outage instead). A decorator
// that retries inside a call absorbs the failures the suite injects; it
// leaves Env.Faults nil and says why in its test.
//
// Against a shared sandbox, every key starts with a random prefix and the
// suite deletes the records it created. Subtests run in parallel; one run
// takes a few seconds (a 429 may hold a throttle for its Retry-After).
package sinktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eventsync/eventsync/sink"
)

// Env is one sink under test, built fresh for each subtest.
type Env struct {
	// Sink is the sink under test. When it also implements sink.Lister,
	// the listing checks run too.
	Sink sink.Sink
	// Entity is the entity the suite writes; Sink must be configured for
	// it (and list it, when Sink is a Lister).
	Entity string
	// Data returns the record data the suite writes, carrying title in a
	// field the API stores as given, so a listing shows it. Nil means
	// {"title": title}.
	Data func(title string) json.RawMessage
	// Faults makes the API fail on request; nil skips the subtests that
	// need it.
	Faults Faults
	// PlainKeys declares an API whose external ids may hold only letters,
	// digits, '-' and '_': the OddKeys subtest is skipped.
	PlainKeys bool
}

// Operation names, as in sink.Error.Op.
const (
	OpCreate = "create"
	OpUpdate = "update"
	OpDelete = "delete"
	OpLookup = "lookup"
	OpList   = "list"
)

// Faults makes the API under a sink misbehave on request. A harness
// reports its own problems through the *testing.T it was built with.
type Faults interface {
	// FailNext makes the next API request the sink sends for op (an Op
	// name) fail with status before it takes any effect, with a
	// Retry-After header of retryAfter (whole seconds) when it is above
	// 0. A harness whose sink sends one request per call may ignore op:
	// the suite calls FailNext right before the call it means.
	FailNext(op string, status int, retryAfter time.Duration)
	// Stall makes the API leave every request sent from now on unanswered
	// until its client gives up or release is called. The suite always
	// calls release, and cancels every call it made meanwhile.
	Stall() (release func())
}

// Run runs the suite. newEnv must return a sink that shares nothing the
// suite writes with any other it returned (a fresh API, or a shared one:
// keys are unique per subtest) and register its cleanup with t.Cleanup.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Helper()
	s := suite{newEnv: newEnv}
	tests := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"CreateReturnsRemoteID", s.createReturnsRemoteID},
		{"CreateIsNotIdempotent", s.createIsNotIdempotent},
		{"LookupUnknownKey", s.lookupUnknownKey},
		{"LookupMatchesWholeKey", s.lookupMatchesWholeKey},
		{"UpdateKeepsRecordAndKey", s.updateKeepsRecordAndKey},
		{"DeleteThenLookupFindsNothing", s.deleteThenLookup},
		{"MissingRecordIsNotFound", s.missingRecordIsNotFound},
		{"OddKeys", s.oddKeys},
		{"ListEveryRecordOnce", s.listEveryRecordOnce},
		{"ListStopsOnCallbackError", s.listStopsOnCallbackError},
		{"ConcurrentCalls", s.concurrentCalls},
		{"CanceledContext", s.canceledContext},
		{"CancelDuringCall", s.cancelDuringCall},
		{"Failures", s.failures},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t)
		})
	}
}

type suite struct {
	newEnv func(t *testing.T) Env
}

// callTimeout bounds every call of the suite; a call that takes this long
// is stuck, not slow.
const callTimeout = 30 * time.Second

// h is one subtest's sink and the records it created.
type h struct {
	t      *testing.T
	env    Env
	ctx    context.Context
	prefix string
	lister sink.Lister // nil when the sink does not list

	mu      sync.Mutex
	created []string // remote ids, deleted at cleanup unless gone
}

// env builds a fresh sink for t and deletes what the subtest created when
// it ends (the harness's own cleanup, registered first, runs after).
func (s suite) env(t *testing.T) *h {
	t.Helper()
	env := s.newEnv(t)
	if env.Sink == nil || env.Entity == "" {
		t.Fatal("sinktest: the Env has no Sink or no Entity")
	}
	if env.Data == nil {
		env.Data = func(title string) json.RawMessage {
			b, _ := json.Marshal(map[string]string{"title": title})
			return b
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	var b [4]byte
	_, _ = rand.Read(b[:])
	c := &h{t: t, env: env, ctx: ctx, prefix: "sinktest-" + hex.EncodeToString(b[:])}
	c.lister, _ = env.Sink.(sink.Lister)
	t.Cleanup(func() {
		cancel()
		c.deleteCreated()
	})
	return c
}

func (c *h) deleteCreated() {
	c.mu.Lock()
	ids := c.created
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	for _, id := range ids {
		if err := c.env.Sink.Delete(ctx, c.env.Entity, id); err != nil && !errors.Is(err, sink.ErrNotFound) {
			c.t.Logf("sinktest: cleanup: delete %s: %v", id, err)
		}
	}
}

// key returns a key unique to this subtest.
func (c *h) key(name string) string { return c.prefix + "-" + name }

func (c *h) record(key string, version int64, title string) sink.Record {
	return sink.Record{Entity: c.env.Entity, Key: key, Version: version, Data: c.env.Data(title)}
}

// create creates key with title and returns its remote id.
func (c *h) create(key, title string) string {
	c.t.Helper()
	id, err := c.tryCreate(c.ctx, key, title)
	if err != nil {
		c.t.Fatalf("Create(%q): %v", key, err)
	}
	return id
}

func (c *h) tryCreate(ctx context.Context, key, title string) (string, error) {
	id, err := c.env.Sink.Create(ctx, c.record(key, 1, title))
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("Create(%q) returned an empty remote id and no error; the engine stores the id to update and delete the record", key)
	}
	c.mu.Lock()
	c.created = append(c.created, id)
	c.mu.Unlock()
	return id, nil
}

// lookup returns the sorted ids Lookup finds for key.
func (c *h) lookup(key string) []string {
	c.t.Helper()
	ids, err := c.tryLookup(c.ctx, key)
	if err != nil {
		c.t.Fatal(err)
	}
	return ids
}

func (c *h) tryLookup(ctx context.Context, key string) ([]string, error) {
	ids, err := c.env.Sink.Lookup(ctx, c.env.Entity, key)
	if err != nil {
		return nil, fmt.Errorf("Lookup(%q): %w", key, err)
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	if len(slices.Compact(slices.Clone(ids))) != len(ids) {
		return nil, fmt.Errorf("Lookup(%q) = %q names a record twice", key, ids)
	}
	return ids, nil
}

// wantLookup fails unless Lookup of key finds exactly want.
func (c *h) wantLookup(key string, want ...string) {
	c.t.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	want = slices.Compact(want)
	if got := c.lookup(key); !slices.Equal(got, want) {
		c.t.Fatalf("Lookup(%q) = %q; want %q", key, got, want)
	}
}

// listed returns the records a listing yields, by remote id; nil when the
// sink does not list.
func (c *h) listed() map[string]sink.RemoteRecord {
	c.t.Helper()
	if c.lister == nil {
		return nil
	}
	out := map[string]sink.RemoteRecord{}
	err := c.lister.List(c.ctx, c.env.Entity, func(r sink.RemoteRecord) error {
		if _, dup := out[r.RemoteID]; dup {
			return fmt.Errorf("record %q listed twice", r.RemoteID)
		}
		out[r.RemoteID] = r
		return nil
	})
	if err != nil {
		c.t.Fatalf("List(%q): %v", c.env.Entity, err)
	}
	return out
}

// hasValue reports whether want is a string anywhere in v (a decoded JSON
// value): the suite does not know how a sink maps data onto fields.
func hasValue(v any, want string) bool {
	switch v := v.(type) {
	case string:
		return v == want
	case map[string]any:
		for _, e := range v {
			if hasValue(e, want) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasValue(e, want) {
				return true
			}
		}
	}
	return false
}

// wantNotFound fails unless err is the port's "record gone" answer.
func wantNotFound(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	if !errors.Is(err, sink.ErrNotFound) {
		t.Errorf("%s = %v; want an error wrapping sink.ErrNotFound (the engine then creates the record anew or counts it deleted)", what, err)
		return
	}
	if retry, _ := sink.Retryable(err); retry {
		t.Errorf("%s = %v is retryable; a record that is gone stays gone", what, err)
	}
	if v := sink.Classify(ctx, err); v.Class != sink.ClassClientError {
		t.Errorf("sink.Classify(%s) = %s; want %s", what, v.Class, sink.ClassClientError)
	}
}
