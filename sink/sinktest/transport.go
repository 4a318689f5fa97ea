package sinktest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Transport is an http.RoundTripper that implements Faults in front of any
// API, for a sink whose HTTP client the test can set (most SDKs take an
// *http.Client): FailNext answers the next request itself, without sending
// it, and Stall holds requests until their context ends or release is
// called. Everything else goes to Base.
//
//	tr := &sinktest.Transport{Base: &http.Transport{}}
//	s := mysink.New(sandboxURL, &http.Client{Transport: tr})
//	t.Cleanup(tr.CloseIdleConnections)
//	return sinktest.Env{Sink: s, Entity: "contact", Faults: tr}
//
// It fails the next request whatever op it is for, so it suits sinks that
// send one request per call (a token refresh first would take the failure).
type Transport struct {
	// Base sends the requests not failed; nil means http.DefaultTransport.
	Base http.RoundTripper

	mu      sync.Mutex
	fail    *failure      // the next request's answer; nil: send it
	stalled chan struct{} // closed by release; nil when not stalled
}

var _ Faults = (*Transport)(nil)

// FailNext implements Faults.
func (tr *Transport) FailNext(op string, status int, retryAfter time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.fail = &failure{op: op, status: status, retryAfter: retryAfter}
}

// Stall implements Faults.
func (tr *Transport) Stall() (release func()) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ch := make(chan struct{})
	tr.stalled = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			tr.mu.Lock()
			if tr.stalled == ch {
				tr.stalled = nil
			}
			tr.mu.Unlock()
			close(ch)
		})
	}
}

// RoundTrip implements http.RoundTripper.
func (tr *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	tr.mu.Lock()
	fail, stalled := tr.fail, tr.stalled
	tr.fail = nil
	tr.mu.Unlock()
	if fail != nil {
		closeBody(req)
		return failed(req, fail), nil
	}
	if stalled != nil {
		select {
		case <-stalled:
		case <-req.Context().Done():
			closeBody(req)
			return nil, fmt.Errorf("sinktest: request held by Stall: %w", context.Cause(req.Context()))
		}
	}
	base := tr.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(req)
}

// CloseIdleConnections closes Base's idle connections, so a client's
// CloseIdleConnections reaches them.
func (tr *Transport) CloseIdleConnections() {
	if c, ok := tr.Base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// failed is the answer FailNext asked for.
func failed(req *http.Request, f *failure) *http.Response {
	body := fmt.Sprintf(`{"error":"injected by sinktest: %s"}`, http.StatusText(f.status))
	h := http.Header{"Content-Type": {"application/json"}}
	if f.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((f.retryAfter+time.Second-1)/time.Second)))
	}
	return &http.Response{
		Status:        strconv.Itoa(f.status) + " " + http.StatusText(f.status),
		StatusCode:    f.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader([]byte(body))),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
