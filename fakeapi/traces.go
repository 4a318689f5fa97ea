package fakeapi

import (
	"net/http"
	"sync"
	"time"
)

// TracedRequest is an API request that carried W3C trace context: what a
// test reads to check that a client propagates its traces.
type TracedRequest struct {
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	Traceparent string    `json:"traceparent"`
	Tracestate  string    `json:"tracestate,omitempty"`
	At          time.Time `json:"at"`
}

// tracesKept is how many traced requests the server remembers (the
// newest).
const tracesKept = 1000

// traceLog is a ring of the newest traced requests.
type traceLog struct {
	mu   sync.Mutex
	ring []TracedRequest
	next int // where the next one goes once the ring is full
}

// note records r if it carries a traceparent header; a request without one
// costs a header lookup.
func (l *traceLog) note(r *http.Request) {
	tp := r.Header.Get("Traceparent")
	if tp == "" {
		return
	}
	tr := TracedRequest{Method: r.Method, Path: r.URL.Path, Traceparent: tp, Tracestate: r.Header.Get("Tracestate"), At: time.Now().UTC()}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ring) < tracesKept {
		l.ring = append(l.ring, tr)
		return
	}
	l.ring[l.next] = tr
	l.next = (l.next + 1) % tracesKept
}

func (l *traceLog) list() []TracedRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]TracedRequest, 0, len(l.ring))
	out = append(out, l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...)
}

func (l *traceLog) reset() {
	l.mu.Lock()
	l.ring, l.next = nil, 0
	l.mu.Unlock()
}

// TracedRequests returns the newest requests to /v1 (up to 1,000, oldest
// first) that carried a W3C traceparent header, with the header as
// received, whatever the answer (a refused request counts too). Also
// served as GET /_admin/traces.
func (s *Server) TracedRequests() []TracedRequest { return s.traces.list() }
