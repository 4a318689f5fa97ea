package fakeapi

import (
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
)

// Stats is the detectors' and counters' snapshot served by GET /_admin/stats.
type Stats struct {
	// Requests counts /v1 responses by method then status code, e.g.
	// {"POST":{"201":10,"503":2}}. Status 499 means the client went away
	// before an answer (for held timeouts, after the write happened).
	Requests map[string]map[string]int64 `json:"requests"`
	// InFlight is the number of /v1 requests being handled now.
	InFlight int64 `json:"in_flight"`
	// MaxInFlight is the peak of InFlight since start or reset; requests
	// refused by the concurrency ceiling count too, since they were sent.
	MaxInFlight int64 `json:"max_in_flight"`
	// OverlappingWrites counts writes (POST, PUT, DELETE) that began while
	// another write on the same record id or the same external_id of the
	// same collection was in flight. A write is in flight from arrival
	// (after admission: outage, ceiling, rate limit) until it is applied.
	OverlappingWrites int64 `json:"overlapping_writes"`
	// DuplicateRecords is, now, Σ over external_id groups of (records-1).
	DuplicateRecords int64 `json:"duplicate_records"`
	// StaleWrites counts PUTs that lowered a record's numeric version field.
	StaleWrites int64 `json:"stale_writes"`
	// Records is the number of records per collection.
	Records map[string]int64 `json:"records"`
	// FaultsInjected counts injected faults by kind: latency, error,
	// timeout, rate_limited, over_capacity, outage.
	FaultsInjected map[string]int64 `json:"faults_injected"`
	// BatchRequests counts POSTs to /v1/{collection}/batch/{op}, one per
	// request whatever its answer (refusals by the faults included).
	BatchRequests int64 `json:"batch_requests"`
	// BatchItems counts the items batch requests wrote (a 2xx result), so
	// BatchItems/BatchRequests is the entities per request.
	BatchItems int64 `json:"batch_items"`
	// BatchResults counts batch items by operation then result status,
	// e.g. {"update":{"200":98,"404":2}}.
	BatchResults map[string]map[string]int64 `json:"batch_results,omitempty"`
	// TokensIssued counts tokens from the OAuth2 token endpoint,
	// TokensExpired /v1 requests refused for an expired token, and
	// AuthFailures every 401 (token endpoint and /v1), expired included.
	TokensIssued  int64 `json:"tokens_issued,omitempty"`
	TokensExpired int64 `json:"tokens_expired,omitempty"`
	AuthFailures  int64 `json:"auth_failures,omitempty"`
}

// Stats returns a snapshot of the counters and detectors.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:          make(map[string]map[string]int64),
		InFlight:          s.inFlight.Load(),
		MaxInFlight:       s.counters.maxInFlight.Load(),
		OverlappingWrites: s.counters.overlaps.Load(),
		StaleWrites:       s.counters.stale.Load(),
		TokensIssued:      s.counters.tokensIssued.Load(),
		TokensExpired:     s.counters.tokensExpired.Load(),
		AuthFailures:      s.counters.authFailures.Load(),
		BatchRequests:     s.counters.batchRequests.Load(),
		BatchItems:        s.counters.batchItems.Load(),
		Records:           make(map[string]int64),
		FaultsInjected:    make(map[string]int64),
	}
	for m := range methodNames {
		addByStatus(&st.Requests, methodNames[m], &s.counters.status[m])
	}
	for op := range batchOpNames {
		addByStatus(&st.BatchResults, batchOpNames[op], &s.counters.batchResults[op])
	}
	for name, c := range s.collectionNames() {
		n, dups := c.counts()
		st.Records[name] = n
		st.DuplicateRecords += dups
	}
	for k := range faultNames {
		st.FaultsInjected[faultNames[k]] = s.counters.injected[k].Load()
	}
	return st
}

// addByStatus adds the non-zero counts of byCode to (*into)[name], making
// the maps only when there is something to put in them.
func addByStatus(into *map[string]map[string]int64, name string, byCode *[600]atomic.Int64) {
	for code := range byCode {
		n := byCode[code].Load()
		if n == 0 {
			continue
		}
		if *into == nil {
			*into = make(map[string]map[string]int64)
		}
		byStatus := (*into)[name]
		if byStatus == nil {
			byStatus = make(map[string]int64)
			(*into)[name] = byStatus
		}
		byStatus[strconv.Itoa(code)] = n
	}
}

// Method indexes for the request counters; anything else counts as OTHER.
const (
	mGet = iota
	mPost
	mPut
	mDelete
	mOther
	numMethods
)

var methodNames = [numMethods]string{"GET", "POST", "PUT", "DELETE", "OTHER"}

func methodIndex(m string) int {
	switch m {
	case "GET":
		return mGet
	case "POST":
		return mPost
	case "PUT":
		return mPut
	case "DELETE":
		return mDelete
	}
	return mOther
}

// Injected fault kinds.
const (
	fLatency = iota
	fError
	fTimeout
	fRateLimited
	fOverCapacity
	fOutage
	numFaults
)

var faultNames = [numFaults]string{"latency", "error", "timeout", "rate_limited", "over_capacity", "outage"}

// counters are plain atomics indexed by method and status code: no lock and
// no map on the request path.
type counters struct {
	status      [numMethods][600]atomic.Int64
	injected    [numFaults]atomic.Int64
	maxInFlight atomic.Int64
	overlaps    atomic.Int64
	stale       atomic.Int64
	// authentication (Config.Auth)
	tokensIssued, tokensExpired, authFailures atomic.Int64
	// batch requests and their items' results
	batchRequests, batchItems atomic.Int64
	batchResults              [numBatchOps][600]atomic.Int64
}

func (c *counters) count(method, status int) {
	if status < 0 || status >= 600 {
		status = 0
	}
	c.status[method][status].Add(1)
}

func (c *counters) notePeak(n int64) {
	for {
		cur := c.maxInFlight.Load()
		if n <= cur || c.maxInFlight.CompareAndSwap(cur, n) {
			return
		}
	}
}

func (c *counters) reset(inFlight int64) {
	for m := range c.status {
		for i := range c.status[m] {
			c.status[m][i].Store(0)
		}
	}
	for i := range c.injected {
		c.injected[i].Store(0)
	}
	c.maxInFlight.Store(inFlight)
	c.overlaps.Store(0)
	c.stale.Store(0)
	c.tokensIssued.Store(0)
	c.tokensExpired.Store(0)
	c.authFailures.Store(0)
	c.batchRequests.Store(0)
	c.batchItems.Store(0)
	for op := range c.batchResults {
		for i := range c.batchResults[op] {
			c.batchResults[op][i].Store(0)
		}
	}
}

// writeRegistry tracks which record ids and external_ids have a write in
// flight, sharded so unrelated writes do not contend.
type writeRegistry struct {
	seed   maphash.Seed
	shards [64]writeShard
}

type writeShard struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *writeRegistry) init() {
	w.seed = maphash.MakeSeed()
	for i := range w.shards {
		w.shards[i].n = make(map[string]int)
	}
}

func (w *writeRegistry) shard(key string) *writeShard {
	return &w.shards[maphash.String(w.seed, key)%uint64(len(w.shards))]
}

// acquire marks keys as written and reports whether any was already.
func (w *writeRegistry) acquire(keys []string) (overlap bool) {
	for _, k := range keys {
		sh := w.shard(k)
		sh.mu.Lock()
		if sh.n[k] > 0 {
			overlap = true
		}
		sh.n[k]++
		sh.mu.Unlock()
	}
	return overlap
}

func (w *writeRegistry) release(keys []string) {
	for _, k := range keys {
		sh := w.shard(k)
		sh.mu.Lock()
		if sh.n[k]--; sh.n[k] <= 0 {
			delete(sh.n, k)
		}
		sh.mu.Unlock()
	}
}
