package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// WriterStatus is what a writer's lease on a key was when its write
// reached the API.
type WriterStatus int

const (
	// Held: the writer's lease is the key's newest (possibly expired, but
	// nobody acquired the key since) and the writer has not released it.
	Held WriterStatus = iota
	// Zombie: another worker acquired the key after the writer's lease
	// expired. Its write may land after a newer one; the engine cannot
	// prevent that, only repair it.
	Zombie
	// Unleased: the writer holds no lease on the key (never took one, or
	// released it): a bug in the code under test.
	Unleased
)

func (w WriterStatus) String() string {
	return [...]string{"held", "zombie", "unleased"}[w]
}

// Observer tells the API model what it cannot know from the calls alone.
type Observer interface {
	// Writer is t's lease status on k now.
	Writer(t *Task, k store.Key) WriterStatus
	// Tombstone is the version of the delete event t is applying to k, 0
	// when t is not applying a delete of k.
	Tombstone(t *Task, k store.Key) int64
	// Answered is called with every answer the API gives t (err nil for
	// success), including the failures it injects.
	Answered(t *Task, op string, k store.Key, err error)
	// Expiry is when t's lease on k expires, false when t does not hold
	// k's newest lease.
	Expiry(t *Task, k store.Key) (time.Time, bool)
	// ZombieWrite reports that a write of t to k took effect after another
	// worker took k over.
	ZombieWrite(t *Task, k store.Key, what string)
	// Violation reports a broken invariant.
	Violation(kind, format string, args ...any)
}

// APIFaults are the probabilities (per call) and durations of the API's
// misbehaviour. The zero value is a perfect API.
type APIFaults struct {
	// Refuse answers a retryable error without processing the call: 500,
	// 502, 503 or 429 (with Retry-After sometimes), 408, or a transport
	// error.
	Refuse float64
	// Permanent answers 422 without processing the call.
	Permanent float64
	// Local fails the call before it is sent (sink.ErrLocal), as a
	// throttle whose limiter is unreachable does.
	Local float64
	// LateError lets a write take effect, then answers a timeout, a reset
	// connection or a 504: the caller does not know it landed.
	LateError float64
	// Slow delays a call by up to SlowMax before it takes effect, and as
	// much again before the answer: leases may expire meanwhile.
	Slow    float64
	SlowMax time.Duration
	// RetryAfterMax bounds the Retry-After of 429 and 503 answers.
	RetryAfterMax time.Duration
}

// APIStats counts what the API saw.
type APIStats struct {
	Creates, Updates, Deletes, Lookups int
	Failures                           int // injected failures answered
	StaleByZombie                      int // stale writes by a writer whose lease was taken over (excused, repaired later)
	OverlapWithZombie                  int // overlapping writes where one writer was a zombie (excused)
	DuplicatePeak                      int // most records one key ever had at once
	Landed                             int // writes that landed after their caller crashed
}

type remoteRecord struct {
	id      string
	key     store.Key
	version int64
	data    json.RawMessage
	// creator is the task that created it and byZombie whether that task
	// was a zombie then (nil for a record from before eventsync).
	creator  *Task
	byZombie bool
}

type request struct {
	op     string
	key    store.Key
	task   *Task
	rec    sink.Record
	id     string // update, delete: the record
	landAt time.Time
	done   bool
	// results
	newID string
	err   error
}

// API is a model of the third-party API: non-idempotent creates, updates
// and deletes by remote id, lookup by external id, and detectors for what
// the engine must never cause. A write is in progress from the moment it
// reaches the API until it takes effect; a write whose caller crashed in
// the meantime still takes effect at its time (the request was on the
// wire).
type API struct {
	s      *Sched
	tr     *Trace
	obs    Observer
	Faults APIFaults
	// DownUntil makes every call fail (503 or a refused connection) until
	// the simulated clock reaches it.
	DownUntil time.Time

	records  map[string]*remoteRecord
	byKey    map[store.Key][]string // remote ids in creation order
	nextID   int
	mark     map[store.Key]int64 // highest version the API was given per key
	inflight map[store.Key][]*request
	detached []*request
	Stats    APIStats
}

// NewAPI returns an empty API model.
func NewAPI(s *Sched, tr *Trace, obs Observer) *API {
	return &API{
		s: s, tr: tr, obs: obs,
		records:  map[string]*remoteRecord{},
		byKey:    map[store.Key][]string{},
		mark:     map[store.Key]int64{},
		inflight: map[store.Key][]*request{},
	}
}

var _ sink.Sink = (*API)(nil)

// Create makes a new record (never idempotent).
func (a *API) Create(ctx context.Context, r sink.Record) (string, error) {
	req := &request{op: "create", key: store.Key{Entity: r.Entity, Key: r.Key}, rec: r}
	err := a.call(ctx, req)
	return req.newID, err
}

// Update replaces a record's data; sink.ErrNotFound when it is gone.
func (a *API) Update(ctx context.Context, remoteID string, r sink.Record) error {
	return a.call(ctx, &request{op: "update", key: store.Key{Entity: r.Entity, Key: r.Key}, rec: r, id: remoteID})
}

// Delete removes a record; sink.ErrNotFound when it is gone.
func (a *API) Delete(ctx context.Context, entity, remoteID string) error {
	k := store.Key{Entity: entity}
	if rec := a.records[remoteID]; rec != nil {
		k = rec.key
	}
	return a.call(ctx, &request{op: "delete", key: k, id: remoteID})
}

// Lookup lists the records whose external id is key, oldest first.
func (a *API) Lookup(ctx context.Context, entity, key string) ([]string, error) {
	req := &request{op: "lookup", key: store.Key{Entity: entity, Key: key}}
	if err := a.call(ctx, req); err != nil {
		return nil, err
	}
	return slices.Clone(a.byKey[req.key]), nil
}

func (req *request) write() bool { return req.op != "lookup" }

func (req *request) String() string {
	switch req.op {
	case "create":
		return fmt.Sprintf("create %s v%d", req.key, req.rec.Version)
	case "update":
		return fmt.Sprintf("update %s %s v%d", req.id, req.key, req.rec.Version)
	case "delete":
		if req.key.Key == "" {
			return fmt.Sprintf("delete %s (no such record)", req.id)
		}
		return fmt.Sprintf("delete %s %s", req.id, req.key)
	}
	return "lookup " + req.key.String()
}

// call runs one API call through its yield points and faults.
func (a *API) call(ctx context.Context, req *request) error {
	t := TaskOf(ctx)
	if t == nil || t != a.s.Current() {
		panic(fmt.Sprintf("sim: API %s called outside its task's turn", req.op))
	}
	req.task = t
	if err := a.s.Yield(); err != nil {
		return err
	}
	if err := a.refuse(req); err != nil {
		a.Stats.Failures++
		a.tr.Addf("%s api %s -> %v", t.Name, req, err)
		a.obs.Answered(t, req.op, req.key, err)
		return err
	}
	if req.write() {
		a.begin(req)
	}
	if a.s.Chance(a.Faults.Slow) {
		d := a.s.Between(0, a.Faults.SlowMax)
		req.landAt = a.s.Now().Add(d)
		a.tr.Addf("%s api %s: slow, takes effect in %s", t.Name, req, fmtDur(d))
		if err := a.s.Sleep(d); err != nil {
			if req.write() {
				// The request is on the wire: it lands at its time, but
				// within the caller's lease, as a request does whose
				// timeout is below the lease TTL (the worker renews the
				// lease while the call runs, and the process is gone).
				if exp, ok := a.obs.Expiry(t, req.key); ok && !req.landAt.Before(exp) {
					req.landAt = maxTime(a.s.Now(), exp.Add(-time.Millisecond))
				}
				a.detached = append(a.detached, req)
				a.tr.Addf("%s api %s: caller crashed, the request lands at +%s", t.Name, req, fmtDur(req.landAt.Sub(Epoch)))
			}
			return err
		}
	}
	a.land(req)
	if req.write() && a.s.Chance(a.Faults.LateError) {
		err := a.lateError(req)
		a.Stats.Failures++
		a.tr.Addf("%s api %s: took effect, answered %v", t.Name, req, err)
		if a.s.Chance(a.Faults.Slow) {
			if serr := a.s.Sleep(a.s.Between(0, a.Faults.SlowMax)); serr != nil {
				return serr
			}
		}
		a.obs.Answered(t, req.op, req.key, err)
		return err
	}
	if a.s.Chance(a.Faults.Slow) {
		d := a.s.Between(0, a.Faults.SlowMax)
		a.tr.Addf("%s api %s: slow answer, in %s", t.Name, req, fmtDur(d))
		if err := a.s.Sleep(d); err != nil {
			return err
		}
	} else if err := a.s.Yield(); err != nil {
		return err // the answer is lost with the worker
	}
	a.obs.Answered(t, req.op, req.key, req.err)
	return req.err
}

// refuse decides whether the call fails before the API processes it.
func (a *API) refuse(req *request) error {
	switch {
	case a.s.Now().Before(a.DownUntil):
		if a.s.Chance(0.5) {
			return &sink.Error{Op: req.op, Status: http.StatusServiceUnavailable, Retryable: true, Body: "simulated outage"}
		}
		return &sink.Error{Op: req.op, Retryable: true, Err: errors.New("simulated outage: connection refused")}
	case a.s.Chance(a.Faults.Local):
		return fmt.Errorf("take a rate token: %w: %w", sink.ErrLocal, errors.New("simulated limiter: connection reset"))
	case a.s.Chance(a.Faults.Permanent):
		return &sink.Error{Op: req.op, Status: http.StatusUnprocessableEntity, Body: "simulated validation error"}
	case a.s.Chance(a.Faults.Refuse):
		retryAfter := func() time.Duration {
			if a.s.Chance(0.5) {
				return 0
			}
			return a.s.Between(time.Second, max(time.Second, a.Faults.RetryAfterMax)).Truncate(time.Second)
		}
		switch a.s.Rand().IntN(6) {
		case 0:
			return &sink.Error{Op: req.op, Status: http.StatusInternalServerError, Retryable: true, Body: "simulated"}
		case 1:
			return &sink.Error{Op: req.op, Status: http.StatusBadGateway, Retryable: true, Body: "simulated"}
		case 2:
			return &sink.Error{Op: req.op, Status: http.StatusServiceUnavailable, Retryable: true, RetryAfter: retryAfter(), Body: "simulated"}
		case 3:
			return &sink.Error{Op: req.op, Status: http.StatusTooManyRequests, Retryable: true, RetryAfter: retryAfter(), Body: "simulated"}
		case 4:
			return &sink.Error{Op: req.op, Status: http.StatusRequestTimeout, Retryable: true, Body: "simulated"}
		default:
			return &sink.Error{Op: req.op, Retryable: true, Err: errors.New("simulated: connection refused")}
		}
	}
	return nil
}

func (a *API) lateError(req *request) error {
	switch a.s.Rand().IntN(3) {
	case 0:
		return &sink.Error{Op: req.op, Retryable: true, Err: fmt.Errorf("simulated: no response within the timeout: %w", context.DeadlineExceeded)}
	case 1:
		return &sink.Error{Op: req.op, Retryable: true, Err: errors.New("simulated: connection reset by peer")}
	default:
		return &sink.Error{Op: req.op, Status: http.StatusGatewayTimeout, Retryable: true, Body: "simulated"}
	}
}

// begin marks a write in progress and detects another one on the same key.
func (a *API) begin(req *request) {
	if req.key.Key == "" {
		return // a delete of an unknown id touches no key
	}
	mine := a.obs.Writer(req.task, req.key)
	for _, other := range a.inflight[req.key] {
		theirs := a.obs.Writer(other.task, req.key)
		if mine == Held && theirs == Held {
			a.obs.Violation("overlapping writes", "%s by %s began while %s by %s was in progress, both holding a lease", req, req.task.Name, other, other.task.Name)
			continue
		}
		a.Stats.OverlapWithZombie++
		a.tr.Addf("%s api %s overlaps %s by %s (%s/%s)", req.task.Name, req, other, other.task.Name, mine, theirs)
	}
	a.inflight[req.key] = append(a.inflight[req.key], req)
}

func (a *API) end(req *request) {
	list := a.inflight[req.key]
	if i := slices.Index(list, req); i >= 0 {
		a.inflight[req.key] = slices.Delete(list, i, i+1)
	}
	if len(a.inflight[req.key]) == 0 {
		delete(a.inflight, req.key)
	}
}

// land carries out req and runs the detectors.
func (a *API) land(req *request) {
	if req.done {
		return
	}
	req.done = true
	if req.write() {
		a.end(req)
	}
	t := req.task
	status := Held
	if req.write() && req.key.Key != "" {
		status = a.obs.Writer(t, req.key)
		switch status {
		case Unleased:
			a.obs.Violation("write without a lease", "%s by %s: the writer holds no lease on %s", req, t.Name, req.key)
		case Zombie:
			a.obs.ZombieWrite(t, req.key, req.String())
		}
	}
	switch req.op {
	case "lookup":
		a.Stats.Lookups++
		a.tr.Addf("%s api %s -> %v", t.Name, req, slices.Clone(a.byKey[req.key]))
	case "create":
		a.Stats.Creates++
		a.checkStale(req, status)
		if status == Held {
			// A lease holder creates only when no record of the key can
			// exist: none known, none in doubt, none found by a lookup.
			// Records a zombie created may appear unseen; the repair of
			// its fenced commit removes them.
			for _, id := range a.byKey[req.key] {
				if other := a.records[id]; !other.byZombie {
					a.obs.Violation("duplicate create", "%s by %s while %s exists (created by %s)", req, t.Name, id, other.creatorName())
					break
				}
			}
		}
		a.nextID++
		id := fmt.Sprintf("r%d", a.nextID)
		a.records[id] = &remoteRecord{id: id, key: req.key, version: req.rec.Version, data: req.rec.Data, creator: t, byZombie: status == Zombie}
		a.byKey[req.key] = append(a.byKey[req.key], id)
		a.Stats.DuplicatePeak = max(a.Stats.DuplicatePeak, len(a.byKey[req.key]))
		req.newID = id
		a.tr.Addf("%s api %s -> %s (%s)", t.Name, req, id, status)
	case "update":
		a.Stats.Updates++
		rec := a.records[req.id]
		if rec == nil {
			req.err = notFound(req.op)
			a.tr.Addf("%s api %s -> not found", t.Name, req)
			return
		}
		if rec.key != req.key {
			a.obs.Violation("update of another key's record", "%s by %s: record %s belongs to %s", req, t.Name, req.id, rec.key)
		}
		a.checkStale(req, status)
		rec.version, rec.data = req.rec.Version, req.rec.Data
		a.tr.Addf("%s api %s -> ok (%s)", t.Name, req, status)
	case "delete":
		a.Stats.Deletes++
		rec := a.records[req.id]
		if rec == nil {
			req.err = notFound(req.op)
			a.tr.Addf("%s api %s -> not found", t.Name, req)
			return
		}
		delete(a.records, req.id)
		ids := a.byKey[rec.key]
		a.byKey[rec.key] = slices.DeleteFunc(ids, func(id string) bool { return id == req.id })
		if len(a.byKey[rec.key]) == 0 {
			delete(a.byKey, rec.key)
			if v := a.obs.Tombstone(t, rec.key); v > 0 {
				a.mark[rec.key] = max(a.mark[rec.key], v)
			}
		}
		a.tr.Addf("%s api %s -> ok (%s)", t.Name, req, status)
	}
}

func (a *API) checkStale(req *request, status WriterStatus) {
	v, mark := req.rec.Version, a.mark[req.key]
	if v < mark {
		switch status {
		case Zombie:
			a.Stats.StaleByZombie++
			a.tr.Addf("%s api %s is stale (the API holds v%d) but its writer is a zombie", req.task.Name, req, mark)
		default:
			a.obs.Violation("stale write", "%s by %s (lease %s): the API was already given v%d of %s", req, req.task.Name, status, mark, req.key)
		}
	}
	a.mark[req.key] = max(mark, v)
}

func (r *remoteRecord) creatorName() string {
	if r.creator == nil {
		return "nobody: it predates eventsync"
	}
	return r.creator.Name
}

func notFound(op string) error {
	return &sink.Error{Op: op, Status: http.StatusNotFound, Body: "simulated: no such record", Err: sink.ErrNotFound}
}

// LandDue carries out the detached writes (of crashed callers) whose time
// has come, in the order they were sent; it returns how many landed.
func (a *API) LandDue() int {
	n := 0
	for len(a.detached) > 0 {
		i := slices.IndexFunc(a.detached, func(r *request) bool { return !r.landAt.After(a.s.Now()) })
		if i < 0 {
			break
		}
		req := a.detached[i]
		a.detached = slices.Delete(a.detached, i, i+1)
		a.Stats.Landed++
		a.land(req)
		n++
	}
	return n
}

// NextLanding is the earliest time a detached write lands.
func (a *API) NextLanding() (at time.Time, ok bool) {
	for _, r := range a.detached {
		if !ok || r.landAt.Before(at) {
			at, ok = r.landAt, true
		}
	}
	return at, ok
}

// Pending reports whether writes are still on the wire.
func (a *API) Pending() bool { return len(a.detached) > 0 }

// Records returns the records of k, oldest first, as (remote id, version,
// data).
func (a *API) Records(k store.Key) []RemoteRecord {
	var out []RemoteRecord
	for _, id := range a.byKey[k] {
		r := a.records[id]
		out = append(out, RemoteRecord{ID: id, Version: r.version, Data: r.data})
	}
	return out
}

// Keys returns every key with at least one record, sorted.
func (a *API) Keys() []store.Key {
	var out []store.Key
	for k := range a.byKey {
		out = append(out, k)
	}
	slices.SortFunc(out, func(x, y store.Key) int {
		if c := cmpString(x.Entity, y.Entity); c != 0 {
			return c
		}
		return cmpString(x.Key, y.Key)
	})
	return out
}

// Seed adds a record that existed before eventsync (no version).
func (a *API) Seed(k store.Key, data json.RawMessage) string {
	a.nextID++
	id := fmt.Sprintf("r%d", a.nextID)
	a.records[id] = &remoteRecord{id: id, key: k, data: data}
	a.byKey[k] = append(a.byKey[k], id)
	return id
}

// RemoteRecord is one record as the API holds it.
type RemoteRecord struct {
	ID      string
	Version int64
	Data    json.RawMessage
}

// Equal reports whether the record holds exactly data.
func (r RemoteRecord) Equal(data json.RawMessage) bool { return bytes.Equal(r.Data, data) }

func cmpString(a, b string) int { return strings.Compare(a, b) }

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
