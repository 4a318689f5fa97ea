package sinktest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/eventsync/eventsync/sink"
)

// call makes one call of op for key (and id, for update and delete).
func (c *h) call(ctx context.Context, op, key, id string) error {
	switch op {
	case OpCreate:
		_, err := c.tryCreate(ctx, key, "created")
		return err
	case OpUpdate:
		return c.env.Sink.Update(ctx, id, c.record(key, 2, "updated"))
	case OpDelete:
		return c.env.Sink.Delete(ctx, c.env.Entity, id)
	case OpLookup:
		_, err := c.env.Sink.Lookup(ctx, c.env.Entity, key)
		return err
	case OpList:
		return c.lister.List(ctx, c.env.Entity, func(sink.RemoteRecord) error { return nil })
	}
	panic("sinktest: unknown op " + op)
}

// ops are the operations the sink offers, List only for a Lister.
func (c *h) ops() []string {
	ops := []string{OpCreate, OpUpdate, OpDelete, OpLookup}
	if c.lister != nil {
		ops = append(ops, OpList)
	}
	return ops
}

// wantCanceled fails unless err is what a call returns when ctx ended: an
// error Classify judges as no judgement of the API.
func wantCanceled(t *testing.T, ctx context.Context, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s returned no error; want the context's error", what)
		return
	}
	if v := sink.Classify(ctx, err); v.Class != sink.ClassCanceled {
		t.Errorf("sink.Classify(%s: %v) = %s; want %s: wrap the context's error so a cancelled call is not counted against the API", what, err, v.Class, sink.ClassCanceled)
	}
}

func (s suite) canceledContext(t *testing.T) {
	c := s.env(t)
	k := c.key("kept")
	id := c.create(k, "kept")
	ctx, cancel := context.WithCancel(c.ctx)
	cancel()
	for _, op := range c.ops() {
		key := k
		if op == OpCreate {
			key = c.key("never")
		}
		wantCanceled(t, ctx, fmt.Sprintf("%s with a cancelled context", op), c.call(ctx, op, key, id))
	}
	// A call cancelled before it began takes no effect: the create made
	// nothing, the delete kept the record.
	c.wantLookup(c.key("never"))
	c.wantLookup(k, id)
}

// faultsOrSkip returns the harness's fault injector or skips t.
func (c *h) faultsOrSkip() Faults {
	c.t.Helper()
	if c.env.Faults == nil {
		c.t.Skip("needs Env.Faults: the harness cannot make the API fail")
	}
	return c.env.Faults
}

// stallWait is how long the suite lets a call reach the stalled API before
// it cancels; a call cancelled before it was sent must return as well.
const stallWait = 50 * time.Millisecond

func (s suite) cancelDuringCall(t *testing.T) {
	c := s.env(t)
	faults := c.faultsOrSkip()
	k := c.key("stalled")
	id := c.create(k, "stalled")
	release := faults.Stall()
	defer release()
	for _, op := range c.ops() {
		for _, how := range []string{"cancel", "deadline"} {
			var ctx context.Context
			var cancel context.CancelFunc
			if how == "cancel" {
				ctx, cancel = context.WithCancel(c.ctx)
				time.AfterFunc(stallWait, cancel)
			} else {
				ctx, cancel = context.WithTimeout(c.ctx, stallWait)
			}
			done := make(chan error, 1)
			go func() { done <- c.call(ctx, op, k, id) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(callTimeout):
				release() // the call returns now; wait for it before failing
				<-done
				cancel()
				t.Fatalf("%s did not return within %s of its context's %s while the API held the request: the sink does not pass its context to the call", op, callTimeout, how)
			}
			cancel()
			wantCanceled(t, ctx, fmt.Sprintf("%s whose context's %s came while the API held it", op, how), err)
		}
	}
}

// failure is one answer the suite makes the API give.
type failure struct {
	op         string
	status     int
	retryAfter time.Duration
	want       sink.Class
}

var failures = []failure{
	{OpCreate, http.StatusServiceUnavailable, 2 * time.Second, sink.ClassOverloaded},
	{OpCreate, http.StatusBadRequest, 0, sink.ClassClientError},
	{OpCreate, http.StatusRequestTimeout, 0, sink.ClassTimeout},
	{OpUpdate, http.StatusTooManyRequests, time.Second, sink.ClassRateLimited},
	{OpUpdate, http.StatusUnprocessableEntity, 0, sink.ClassClientError},
	{OpUpdate, http.StatusInternalServerError, 0, sink.ClassServerError},
	{OpDelete, http.StatusBadGateway, 0, sink.ClassOverloaded},
	{OpDelete, http.StatusForbidden, 0, sink.ClassClientError},
	{OpLookup, http.StatusTooManyRequests, 0, sink.ClassRateLimited},
	{OpLookup, http.StatusGatewayTimeout, time.Second, sink.ClassOverloaded},
	{OpLookup, http.StatusBadRequest, 0, sink.ClassClientError},
	{OpList, http.StatusServiceUnavailable, time.Second, sink.ClassOverloaded},
}

func (f failure) String() string {
	s := fmt.Sprintf("%s_%d", f.op, f.status)
	if f.retryAfter > 0 {
		s += fmt.Sprintf("_retry_after_%s", f.retryAfter)
	}
	return s
}

func (s suite) failures(t *testing.T) {
	for _, f := range failures {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			s.failure(t, f)
		})
	}
}

// failure makes the API answer one request of f.op with f.status and
// checks the sink's error, then that the sink works on the next call.
func (s suite) failure(t *testing.T, f failure) {
	c := s.env(t)
	faults := c.faultsOrSkip()
	if f.op == OpList && c.lister == nil {
		t.Skip("the sink does not implement sink.Lister")
	}
	k, id := c.key("failing"), ""
	if f.op == OpUpdate || f.op == OpDelete {
		id = c.create(k, "failing")
	}
	faults.FailNext(f.op, f.status, f.retryAfter)
	err := c.call(c.ctx, f.op, k, id)
	what := fmt.Sprintf("%s answered HTTP %d", f.op, f.status)
	if f.retryAfter > 0 {
		what += fmt.Sprintf(" with Retry-After %s", f.retryAfter)
	}
	if err == nil {
		t.Fatalf("%s: no error; a sink returns the failure and leaves retries to the engine (a create retried blindly makes a duplicate)", what)
	}
	if errors.Is(err, sink.ErrNotFound) {
		t.Errorf("%s: %v wraps sink.ErrNotFound; only a missing record does", what, err)
	}
	var se *sink.Error
	if !errors.As(err, &se) {
		t.Errorf("%s: %v (%T) is no *sink.Error; return one with Op, Status, Retryable and RetryAfter so the engine can judge it", what, err, err)
	} else if se.Op != f.op || se.Status != f.status {
		t.Errorf("%s: sink.Error{Op: %q, Status: %d}; want Op %q, Status %d", what, se.Op, se.Status, f.op, f.status)
	}
	v := sink.Classify(c.ctx, err)
	if v.Class != f.want || !nearRetryAfter(v.RetryAfter, f.retryAfter) {
		t.Errorf("%s: sink.Classify(%v) = %s after %s; want %s after %s", what, err, v.Class, v.RetryAfter, f.want, f.retryAfter)
	}
	retry, after := sink.Retryable(err)
	if retry != f.want.Retryable() || !nearRetryAfter(after, f.retryAfter) {
		t.Errorf("%s: sink.Retryable(%v) = %v after %s; want %v after %s", what, err, retry, after, f.want.Retryable(), f.retryAfter)
	}

	// The failure took no effect and left the sink working.
	if err := c.call(c.ctx, f.op, k, id); err != nil {
		t.Fatalf("%s, then the same call to a healthy API: %v", what, err)
	}
	if f.op == OpCreate {
		if ids := c.lookup(k); len(ids) != 1 {
			t.Errorf("a failed create and a successful one left %q for the key; want one record", ids)
		}
	}
}

// nearRetryAfter compares delays that travelled as whole seconds in a
// header (or as an HTTP date read a moment later).
func nearRetryAfter(got, want time.Duration) bool {
	if want == 0 {
		return got == 0
	}
	return (got - want).Abs() <= time.Second
}
