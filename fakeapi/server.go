// Package fakeapi is an in-memory HTTP server that behaves like an
// unfriendly third-party REST API, for testing and benchmarking eventsync
// (and any other client) against the failures real APIs show: non-idempotent
// creates, latency, random 5xx, writes that land but time out, rate limits,
// a concurrency ceiling and outages. Detectors count what a correct client
// must never cause: overlapping writes to one record, duplicate records per
// external_id and stale writes that lower a record's version.
//
// Routes (faults apply to /v1 only, never to /_admin):
//
//	POST   /v1/{collection}                   create → 201 + record with new "id" (NOT idempotent)
//	GET    /v1/{collection}/{id}              200 record, 404
//	PUT    /v1/{collection}/{id}              full replace → 200 record, 404 when absent
//	DELETE /v1/{collection}/{id}              204, 404 when absent
//	GET    /v1/{collection}?external_id=X     200 bare JSON array of matching records
//	GET    /v1/{collection}?page=N&per_page=M 200 {"data":[...],"page":N,"per_page":M,"total":T}
//	                                          (creation order; page ≥ 1 default 1; per_page 1..1000 default 100)
//	POST   /v1/{collection}/batch/create      {"items":[record, ...]}               → 200 {"results":[...]}
//	POST   /v1/{collection}/batch/update      {"items":[{"id":ID,"record":record}]} → 200 {"results":[...]}
//	POST   /v1/{collection}/batch/delete      {"ids":[ID, ...]}                     → 200 {"results":[...]}
//	                                          (one result per item, in order: {"status":201|200|204|4xx,
//	                                          "id":…,"error":…}, each what the single call answers;
//	                                          one request for every fault; see docs/fakeapi.md)
//	GET    /_admin/faults                     current faults (outage_for = time left)
//	PUT    /_admin/faults                     merge a faults document (see Faults)
//	DELETE /_admin/faults                     clear every fault and end an outage
//	GET    /_admin/stats                      Stats
//	POST   /_admin/reset                      drop records and counters (faults stay)
//	POST   /_admin/save                       write the state file now
//	GET    /_admin/records/{collection}       every record as NDJSON, streamed
//	GET    /_admin/traces                     the newest /v1 requests that carried a traceparent
//	POST   /_admin/expire-tokens              expire every issued OAuth2 token now
//	POST   /oauth/token                       client credentials grant (Config.Auth.OAuth2 only)
//
// With Config.Auth, /v1 answers 401 without a valid bearer token or HMAC
// signature (see Auth).
//
// Errors are JSON objects {"error":"..."}. Use New for an http.Handler or
// Start for a listening server.
package fakeapi

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/eventsync/eventsync/internal/setting"
)

// Config configures a fake API server.
type Config struct {
	// Listen is the address Start binds; default "127.0.0.1:0" (any free port).
	Listen string
	// TLS, when set, makes Start serve HTTPS with it (the URL is
	// https://…); set ClientAuth to require client certificates.
	TLS *tls.Config
	// Faults injected from the start; change them later with SetFaults.
	Faults Faults
	// VersionField is the numeric record field the stale-write detector
	// compares; default "version".
	VersionField string
	// StateFile, when set, is loaded by New if it exists and written
	// atomically by Close and POST /_admin/save.
	StateFile string
	// Seed makes the fault dice reproducible; 0 picks a random seed.
	Seed uint64
	// Logger receives the few lifecycle messages; nil means slog.Default().
	Logger *slog.Logger
	// Auth makes /v1 require an OAuth2 bearer token, an HMAC signature,
	// or both; see Auth.
	Auth Auth
	// MaxBatch is the most items one batch request (POST
	// /v1/{collection}/batch/{op}) may carry; larger ones are refused whole
	// with 413. 0 means DefaultMaxBatch.
	MaxBatch int
}

// DefaultVersionField is the record field compared by the stale-write detector.
const DefaultVersionField = "version"

// WithDefaults fills in unset fields.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.VersionField == "" {
		c.VersionField = DefaultVersionField
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.VersionField == "" || c.VersionField == "id" || c.VersionField == ExternalIDField {
		return fmt.Errorf("version field %q is not usable; pick a numeric record field such as %q", c.VersionField, DefaultVersionField)
	}
	if c.MaxBatch < 0 {
		return setting.Errorf("fakeapi.max_batch", "max batch %d is negative; use 1 or more items per batch request (0 means %d)", c.MaxBatch, DefaultMaxBatch)
	}
	if err := c.Faults.Validate(); err != nil {
		return fmt.Errorf("invalid faults: %w", err)
	}
	if err := c.Auth.validate(); err != nil {
		return fmt.Errorf("invalid auth: %w", err)
	}
	return nil
}

// Server is the fake API's state and handler. It is safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	nextID   atomic.Uint64
	done     chan struct{} // closed by Close: releases held responses and delays
	stopOnce sync.Once
	closed   sync.Once

	collMu sync.RWMutex
	colls  map[string]*collection

	faults      atomic.Pointer[faultState]
	outageUntil atomic.Int64 // unix nanoseconds; 0 or past = no outage
	failNext    atomic.Pointer[pendingFailures]

	rngMu sync.Mutex
	rng   *rand.Rand

	writes   writeRegistry
	counters counters
	traces   traceLog
	inFlight atomic.Int64
	admin    *http.ServeMux
	tokens   tokens
}

// faultState is swapped atomically so the hot path reads it without a lock.
type faultState struct {
	given   Faults // as set, OutageFor nil: the base a PUT merges into
	f       Faults // given with defaults applied: what requests see
	limiter *rate.Limiter
}

// New returns a server with cfg's faults, loading cfg.StateFile if present.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		done:  make(chan struct{}),
		colls: make(map[string]*collection),
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	s.writes.init()
	if err := s.SetFaults(cfg.Faults); err != nil {
		return nil, err
	}
	if cfg.StateFile != "" {
		n, err := s.load(cfg.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
			s.log.Info("fakeapi: state file absent, starting empty", "path", cfg.StateFile)
		case err != nil:
			return nil, err
		default:
			s.log.Info("fakeapi: loaded state file", "path", cfg.StateFile, "records", n)
		}
	}
	s.admin = s.adminMux()
	return s, nil
}

// Handler serves /v1 (with faults) and /_admin (without).
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			s.traces.note(r)
			if s.checkAuth(w, r) {
				s.serveV1(w, r)
			}
			return
		}
		if r.URL.Path == TokenPath && s.cfg.Auth.OAuth2 != nil {
			s.serveToken(w, r)
			return
		}
		s.admin.ServeHTTP(w, r)
	})
}

// SetFaults replaces the injected faults. A non-nil OutageFor starts an
// outage of that length from now (0 ends one); nil leaves the outage alone.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("invalid faults: %w", err)
	}
	if f.OutageFor != nil {
		s.StartOutage(time.Duration(*f.OutageFor))
	}
	f.OutageFor = nil
	st := &faultState{given: f, f: f.WithDefaults()}
	if st.f.RateLimit > 0 {
		st.limiter = rate.NewLimiter(rate.Limit(st.f.RateLimit), st.f.Burst)
	}
	s.faults.Store(st)
	return nil
}

// StartOutage makes every /v1 request fail with 503 for d from now; d <= 0
// ends a running outage.
func (s *Server) StartOutage(d time.Duration) {
	if d <= 0 {
		s.outageUntil.Store(0)
		return
	}
	s.outageUntil.Store(time.Now().Add(d).UnixNano())
}

// Faults returns the current faults; OutageFor is the outage time left, nil
// when there is no outage.
func (s *Server) Faults() Faults {
	f := s.faults.Load().f
	if left := s.outageLeft(time.Now()); left > 0 {
		d := Duration(left.Round(time.Millisecond))
		f.OutageFor = &d
	}
	return f
}

func (s *Server) outageLeft(now time.Time) time.Duration {
	until := s.outageUntil.Load()
	if until == 0 {
		return 0
	}
	return time.Duration(until - now.UnixNano())
}

// Record returns one record, or false when absent.
func (s *Server) Record(collection, id string) (Record, bool) {
	c := s.collection(collection, false)
	if c == nil {
		return nil, false
	}
	rec := c.get(id)
	if rec == nil {
		return nil, false
	}
	return decodeRecord(rec), true
}

// Records returns every record of the collection in creation order.
func (s *Server) Records(collection string) []Record {
	c := s.collection(collection, false)
	if c == nil {
		return nil
	}
	var out []Record
	_ = c.each(func(rec *record) error {
		out = append(out, decodeRecord(rec))
		return nil
	})
	return out
}

func decodeRecord(rec *record) Record {
	var r Record
	if err := json.Unmarshal(rec.body, &r); err != nil {
		panic("fakeapi: stored record is not valid JSON: " + err.Error()) // stored bodies come from json.Marshal
	}
	return r
}

// Reset drops every record and the traced requests and zeroes the
// counters; faults (and a running outage) stay. Requests still in flight
// keep being counted in in_flight.
func (s *Server) Reset() {
	s.collMu.Lock()
	s.colls = make(map[string]*collection)
	s.collMu.Unlock()
	s.counters.reset(s.inFlight.Load())
	s.traces.reset()
}

// Close releases held responses and delays, and writes the state file if
// one is configured. It does not stop an http.Server; Running.Close does.
func (s *Server) Close() error {
	s.stopWaiting()
	var err error
	s.closed.Do(func() {
		if s.cfg.StateFile != "" {
			if err = s.Save(); err == nil {
				s.log.Info("fakeapi: saved state file", "path", s.cfg.StateFile)
			}
		}
	})
	return err
}

// stopWaiting releases every held response and injected delay at once.
func (s *Server) stopWaiting() { s.stopOnce.Do(func() { close(s.done) }) }

// validCollection reports whether name matches [A-Za-z0-9_-]{1,128}.
func validCollection(name string) bool {
	if len(name) == 0 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// collection returns the named collection, creating it when create is set;
// nil when absent (or the name is invalid).
func (s *Server) collection(name string, create bool) *collection {
	s.collMu.RLock()
	c := s.colls[name]
	s.collMu.RUnlock()
	if c != nil || !create {
		return c
	}
	s.collMu.Lock()
	defer s.collMu.Unlock()
	if c = s.colls[name]; c == nil {
		c = newCollection()
		s.colls[name] = c
	}
	return c
}

func (s *Server) collectionNames() map[string]*collection {
	s.collMu.RLock()
	defer s.collMu.RUnlock()
	out := make(map[string]*collection, len(s.colls))
	for k, v := range s.colls {
		out[k] = v
	}
	return out
}

// roll reports true with probability p; it takes the dice lock only when a
// fault is configured, keeping the fault-free path lock-free.
func (s *Server) roll(p float64) bool {
	if p <= 0 {
		return false
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Float64() < p
}

func (s *Server) randN(n int64) int64 {
	if n <= 0 {
		return 0
	}
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Int64N(n)
}
