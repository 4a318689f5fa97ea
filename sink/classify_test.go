package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

var _ net.Error = timeoutErr{}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	cases := []struct {
		name       string
		ctx        context.Context
		err        error
		class      Class
		retryAfter time.Duration
		api        bool
	}{
		{"nil", bg, nil, ClassOK, 0, false},
		{"local", bg, fmt.Errorf("take a token: %w: refused", ErrLocal), ClassLocal, 0, false},
		{"local wrapped in a sink error", bg, &Error{Op: "create", Retryable: true, Err: fmt.Errorf("%w: x", ErrLocal)}, ClassLocal, 0, false},
		{"not found", bg, fmt.Errorf("update: %w", ErrNotFound), ClassClientError, 0, false},
		{"429", bg, &Error{Status: 429, Retryable: true, RetryAfter: 2 * time.Second}, ClassRateLimited, 2 * time.Second, true},
		{"503", bg, &Error{Status: 503, Retryable: true, RetryAfter: time.Second}, ClassOverloaded, time.Second, true},
		{"500", bg, &Error{Status: 500, Retryable: true}, ClassServerError, 0, true},
		{"408", bg, &Error{Status: 408, Retryable: true}, ClassTimeout, 0, true},
		{"422", bg, &Error{Status: 422}, ClassClientError, 0, false},
		{"permanent without status", bg, &Error{Op: "create", Err: errors.New("cannot encode body")}, ClassClientError, 0, false},
		{"network timeout", bg, &Error{Op: "update", Retryable: true, Err: timeoutErr{}}, ClassTimeout, 0, true},
		{"deadline", bg, context.DeadlineExceeded, ClassTimeout, 0, true},
		{"connection refused", bg, &Error{Op: "update", Retryable: true, Err: errors.New("connection refused")}, ClassTransport, 0, true},
		{"caller cancelled", canceled, fmt.Errorf("update: %w", context.Canceled), ClassCanceled, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Classify(c.ctx, c.err)
			if v.Class != c.class || v.RetryAfter != c.retryAfter {
				t.Fatalf("Classify = %+v, want %s with Retry-After %s", v, c.class, c.retryAfter)
			}
			if v.Class.APIFailure() != c.api {
				t.Fatalf("%s.APIFailure() = %v, want %v", v.Class, v.Class.APIFailure(), c.api)
			}
		})
	}
	if ClassRateLimited.Outage() || !ClassOverloaded.Outage() {
		t.Fatal("a 429 is no outage; a 503 is")
	}
	if ClassClientError.Retryable() || !ClassLocal.Retryable() {
		t.Fatal("client errors are permanent; local failures are retried")
	}
}
