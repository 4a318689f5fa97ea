package fakeapi

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxBodyBytes is the largest record body accepted (413 above).
const MaxBodyBytes = 1 << 20

// recordTooLarge is the error of a record body above MaxBodyBytes.
var recordTooLarge = "record body larger than " + strconv.Itoa(MaxBodyBytes) + " bytes"

// MaxPerPage caps per_page, as real APIs do.
const MaxPerPage = 1000

// statusClientGone is counted when the client left before it got an answer.
const statusClientGone = 499

// v1Request is one /v1 call being handled.
type v1Request struct {
	s          *Server
	w          http.ResponseWriter
	r          *http.Request
	method     int
	collection string
	id         string
	batchOp    string // "create", "update" or "delete" on /v1/{collection}/batch/{op}
	faults     *faultState
	written    bool
}

func (s *Server) serveV1(w http.ResponseWriter, r *http.Request) {
	q := &v1Request{s: s, w: w, r: r, method: methodIndex(r.Method), faults: s.faults.Load()}
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	s.counters.notePeak(n)

	var ok bool
	if q.collection, q.id, q.batchOp, ok = parseV1Path(r.URL.Path); !ok {
		msg := "no such route " + r.URL.Path + "; use /v1/{collection}, /v1/{collection}/{id} or POST /v1/{collection}/batch/{create,update,delete}"
		if q.batchOp != "" {
			msg = "no batch operation " + strconv.Quote(truncate(q.batchOp, 40)) + " at " + r.URL.Path + "; use POST /v1/{collection}/batch/create, /batch/update or /batch/delete"
		}
		q.fail(http.StatusNotFound, msg)
		return
	}
	if q.batchOp != "" && q.method == mPost {
		q.s.counters.batchRequests.Add(1)
	}
	if !q.admit(n) {
		return
	}
	switch {
	case q.batchOp != "" && q.method == mPost:
		q.batch()
	case q.batchOp != "":
		w.Header().Set("Allow", "POST")
		q.fail(http.StatusMethodNotAllowed, "method "+r.Method+" not allowed here; allowed: POST")
	case q.id == "" && q.method == mGet:
		q.list()
	case q.id == "" && q.method == mPost:
		q.create()
	case q.id != "" && q.method == mGet:
		q.get()
	case q.id != "" && q.method == mPut:
		q.replace()
	case q.id != "" && q.method == mDelete:
		q.remove()
	default:
		allow := "GET, POST"
		if q.id != "" {
			allow = "GET, PUT, DELETE"
		}
		w.Header().Set("Allow", allow)
		q.fail(http.StatusMethodNotAllowed, "method "+r.Method+" not allowed here; allowed: "+allow)
	}
}

// parseV1Path splits a /v1 path into its collection and either a record id
// (/v1/{collection}/{id}) or a batch operation (/v1/{collection}/batch/{op});
// ok is false for any other shape. An unknown op comes back with ok false
// so the 404 can name it. "batch" alone stays a record id: /v1/c/batch is
// the record "batch", as any other id.
func parseV1Path(path string) (collection, id, batchOp string, ok bool) {
	rest, found := strings.CutPrefix(path, "/v1/")
	if !found {
		return "", "", "", false
	}
	collection, tail, hasTail := strings.Cut(rest, "/")
	if !validCollection(collection) || (hasTail && tail == "") {
		return collection, "", "", false
	}
	id, op, isBatch := strings.Cut(tail, "/")
	if !isBatch {
		return collection, id, "", true
	}
	if id != batchSegment || op == "" {
		return collection, "", "", false
	}
	return collection, "", op, batchOpIndex(op) >= 0
}

// admit applies the faults that refuse a request on arrival: FailNext,
// outage, concurrency ceiling, rate limit.
func (q *v1Request) admit(inFlight int64) bool {
	if p, ok := q.s.takeFailure(); ok {
		q.failAsAsked(p)
		return false
	}
	now := time.Now()
	if left := q.s.outageLeft(now); left > 0 {
		q.s.counters.injected[fOutage].Add(1)
		q.w.Header().Set("Retry-After", retryAfter(left))
		q.fail(http.StatusServiceUnavailable, "service unavailable: outage in progress")
		return false
	}
	f := &q.faults.f
	if f.MaxConcurrency > 0 && inFlight > int64(f.MaxConcurrency) {
		q.s.counters.injected[fOverCapacity].Add(1)
		q.w.Header().Set("Retry-After", "1")
		q.fail(http.StatusServiceUnavailable, "service unavailable: too many concurrent requests")
		return false
	}
	if lim := q.faults.limiter; lim != nil {
		res := lim.ReserveN(now, 1)
		if delay := res.DelayFrom(now); !res.OK() || delay > 0 {
			res.CancelAt(now)
			if !res.OK() {
				delay = time.Second
			}
			q.s.counters.injected[fRateLimited].Add(1)
			q.w.Header().Set("Retry-After", retryAfter(delay))
			q.fail(http.StatusTooManyRequests, "rate limit exceeded")
			return false
		}
	}
	return true
}

// retryAfter renders d as whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(1, int64(math.Ceil(d.Seconds()))), 10)
}

// delayAndMaybeFail applies latency and the random error rate. It returns
// false when the request is finished (an error was sent or the client left).
func (q *v1Request) delayAndMaybeFail() bool {
	f := &q.faults.f
	if d := time.Duration(f.Latency) + time.Duration(q.s.randN(int64(f.Jitter))); d > 0 {
		q.s.counters.injected[fLatency].Add(1)
		if !q.wait(d) {
			return false
		}
	}
	if q.s.roll(f.ErrorRate) {
		q.s.counters.injected[fError].Add(1)
		status := [...]int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[q.s.randN(3)]
		q.fail(status, "injected failure: "+http.StatusText(status))
		return false
	}
	return true
}

// wait sleeps for d; false (with 499 counted) when the client went away, or
// the server closed, first.
func (q *v1Request) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.r.Context().Done():
		q.gone()
		return false
	case <-q.s.done:
		q.fail(http.StatusServiceUnavailable, "server shutting down")
		return false
	}
}

// maybeHold holds the response of a successful write for TimeoutHold with
// probability TimeoutRate: the write already happened, the client will most
// likely time out.
func (q *v1Request) maybeHold() bool {
	f := &q.faults.f
	if !q.s.roll(f.TimeoutRate) {
		return true
	}
	q.s.counters.injected[fTimeout].Add(1)
	t := time.NewTimer(time.Duration(f.TimeoutHold))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.s.done:
		return true
	case <-q.r.Context().Done():
		q.gone()
		return false
	}
}

// writeKeys names what a write touches, for the overlap detector.
func (q *v1Request) writeKeys(exts ...string) []string { return writeKeys(q.collection, q.id, exts...) }

// writeKeys names the record id (when set) and the external ids a write on
// collection touches.
func writeKeys(collection, id string, exts ...string) []string {
	keys := make([]string, 0, 1+len(exts))
	if id != "" {
		keys = append(keys, collection+"\x00id\x00"+id)
	}
	for i, e := range exts {
		if e != "" && (i == 0 || e != exts[0]) {
			keys = append(keys, collection+"\x00ext\x00"+e)
		}
	}
	return keys
}

// beginWrite registers the write with the overlap detector and returns the
// function that ends it.
func (q *v1Request) beginWrite(keys []string) (end func()) {
	if len(keys) == 0 {
		return func() {}
	}
	if q.s.writes.acquire(keys) {
		q.s.counters.overlaps.Add(1)
	}
	done := false
	return func() {
		if !done {
			done = true
			q.s.writes.release(keys)
		}
	}
}

func (q *v1Request) readBody(id string) (*record, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(q.w, q.r.Body, MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			q.fail(http.StatusRequestEntityTooLarge, recordTooLarge)
			return nil, false
		}
		q.gone()
		return nil, false
	}
	rec, err := parseBody(body, id, q.s.cfg.VersionField)
	if err != nil {
		q.fail(http.StatusBadRequest, err.Error())
		return nil, false
	}
	return rec, true
}

func (q *v1Request) create() {
	rec, ok := q.readBody(strconv.FormatUint(q.s.nextID.Add(1), 10))
	if !ok {
		return
	}
	end := q.beginWrite(q.writeKeys(rec.extID))
	defer end()
	if !q.delayAndMaybeFail() {
		return
	}
	q.s.collection(q.collection, true).insert(rec)
	end()
	if q.maybeHold() {
		q.reply(http.StatusCreated, rec.body)
	}
}

func (q *v1Request) get() {
	if !q.delayAndMaybeFail() {
		return
	}
	var rec *record
	if c := q.s.collection(q.collection, false); c != nil {
		rec = c.get(q.id)
	}
	if rec == nil {
		q.notFound()
		return
	}
	q.reply(http.StatusOK, rec.body)
}

func (q *v1Request) replace() {
	rec, ok := q.readBody(q.id)
	if !ok {
		return
	}
	c := q.s.collection(q.collection, false)
	var prevExt string
	if c != nil {
		if prev := c.get(q.id); prev != nil {
			prevExt = prev.extID
		}
	}
	end := q.beginWrite(q.writeKeys(rec.extID, prevExt))
	defer end()
	if !q.delayAndMaybeFail() {
		return
	}
	var old *record
	if c != nil {
		old = c.replace(rec)
	}
	end()
	if old == nil {
		q.notFound()
		return
	}
	if rec.version.less(old.version) {
		q.s.counters.stale.Add(1)
	}
	if q.maybeHold() {
		q.reply(http.StatusOK, rec.body)
	}
}

func (q *v1Request) remove() {
	c := q.s.collection(q.collection, false)
	var prevExt string
	if c != nil {
		if prev := c.get(q.id); prev != nil {
			prevExt = prev.extID
		}
	}
	end := q.beginWrite(q.writeKeys(prevExt))
	defer end()
	if !q.delayAndMaybeFail() {
		return
	}
	var old *record
	if c != nil {
		old = c.remove(q.id)
	}
	end()
	if old == nil {
		q.notFound()
		return
	}
	if q.maybeHold() {
		q.reply(http.StatusNoContent, nil)
	}
}

func (q *v1Request) list() {
	query := q.r.URL.Query()
	if query.Has(ExternalIDField) {
		if !q.delayAndMaybeFail() {
			return
		}
		var recs []*record
		if c := q.s.collection(q.collection, false); c != nil {
			recs = c.findByExt(query.Get(ExternalIDField))
		}
		var b bytes.Buffer
		appendArray(&b, recs)
		q.reply(http.StatusOK, b.Bytes())
		return
	}
	page, ok := q.intParam(query.Get("page"), "page", 1, math.MaxInt32)
	if !ok {
		return
	}
	perPage, ok := q.intParam(query.Get("per_page"), "per_page", 100, MaxPerPage)
	if !ok {
		return
	}
	if !q.delayAndMaybeFail() {
		return
	}
	var recs []*record
	total := 0
	if c := q.s.collection(q.collection, false); c != nil {
		recs, total = c.page((page-1)*perPage, perPage)
	}
	var b bytes.Buffer
	b.WriteString(`{"data":`)
	appendArray(&b, recs)
	b.WriteString(`,"page":` + strconv.Itoa(page) + `,"per_page":` + strconv.Itoa(perPage) + `,"total":` + strconv.Itoa(total) + "}")
	q.reply(http.StatusOK, b.Bytes())
}

// intParam parses a positive integer query parameter; values above limit
// are clamped to it (per_page) — page uses MaxInt32 as limit.
func (q *v1Request) intParam(raw, name string, def, limit int) (int, bool) {
	if raw == "" {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 {
		q.fail(http.StatusBadRequest, name+" must be a positive integer, got "+strconv.Quote(truncate(raw, 20)))
		return 0, false
	}
	return min(n, limit), true
}

func appendArray(b *bytes.Buffer, recs []*record) {
	b.WriteByte('[')
	for i, rec := range recs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(rec.body)
	}
	b.WriteByte(']')
}

func (q *v1Request) notFound() {
	q.fail(http.StatusNotFound, notFoundMsg(q.collection, q.id))
}

func notFoundMsg(collection, id string) string {
	return "no record " + strconv.Quote(id) + " in collection " + strconv.Quote(collection)
}

func (q *v1Request) reply(status int, body []byte) {
	if q.written {
		return
	}
	q.written = true
	q.s.counters.count(q.method, status)
	if body != nil {
		h := q.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	q.w.WriteHeader(status)
	if body != nil {
		_, _ = q.w.Write(body)
	}
}

func (q *v1Request) fail(status int, msg string) {
	q.reply(status, marshalNoEscape(map[string]string{"error": msg}))
}

// gone records that the client left before an answer; nothing is written.
func (q *v1Request) gone() {
	if !q.written {
		q.written = true
		q.s.counters.count(q.method, statusClientGone)
	}
}
