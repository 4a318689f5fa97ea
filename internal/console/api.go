package console

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/internal/ops"
)

// apiPrefix is the versioned prefix of the control API.
const apiPrefix = "/api/v1/"

// maxRequestBody bounds a request body: an edited event (at most the
// worker's limit, 1 MiB by default) escaped in JSON, or a form.
const maxRequestBody = 4 << 20

func (s *Server) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+apiPrefix+"status", s.apiStatus)
	mux.HandleFunc("GET "+apiPrefix+"streams", s.apiStreams)
	mux.HandleFunc("GET "+apiPrefix+"workers", s.apiWorkers)
	mux.HandleFunc("GET "+apiPrefix+"resync", s.apiResync)
	mux.HandleFunc("GET "+apiPrefix+"verify", s.apiVerify)
	mux.HandleFunc("GET "+apiPrefix+"parked", s.apiParkedList)
	mux.HandleFunc("GET "+apiPrefix+"parked/{id}", s.apiParkedShow)
	mux.Handle("POST "+apiPrefix+"parked/{id}/replay", s.mutation(s.apiParkedReplayOne))
	mux.Handle("POST "+apiPrefix+"parked/{id}/edit", s.mutation(s.apiParkedEdit))
	mux.Handle("POST "+apiPrefix+"parked/{id}/purge", s.mutation(s.apiParkedPurgeOne))
	mux.Handle("POST "+apiPrefix+"parked/replay", s.mutation(s.apiParkedReplay))
	mux.Handle("POST "+apiPrefix+"parked/purge", s.mutation(s.apiParkedPurge))
	mux.Handle("POST "+apiPrefix+"streams/{stream}/pause", s.mutation(s.apiPause))
	mux.Handle("POST "+apiPrefix+"streams/{stream}/resume", s.mutation(s.apiPause))
	mux.HandleFunc(apiPrefix, func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "not_found", "no such API call: see docs/api.md")
	})
}

// mutation lets a state-changing call through only with the token: a
// bearer token, or a browser session with its form token. Without it the
// answer is 401 and nothing changes.
func (s *Server) mutation(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		how := s.authorised(r)
		if how == "" {
			msg := "this call changes the deployment: send Authorization: Bearer <token>"
			if s.cfg.Token == "" {
				msg = "this console was started without a token and is read-only: set EVENTSYNC_CONSOLE_TOKEN (or --token-file) to allow changes"
			}
			s.audit(r, "refused", r.URL.Path, errors.New("no valid token"))
			w.Header().Set("WWW-Authenticate", `Bearer realm="eventsync console"`)
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", msg)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		if how == "session" && !s.formTokenOK(r) {
			s.audit(r, "refused", r.URL.Path, errors.New("missing or wrong form token"))
			s.fail(w, r, http.StatusForbidden, "forbidden", "the form is stale or came from elsewhere: reload the page and try again")
			return
		}
		h(w, r)
	})
}

// formTokenOK checks the form token of a browser session's request: the
// X-CSRF-Token header or the form field _csrf.
func (s *Server) formTokenOK(r *http.Request) bool {
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("_csrf")
	}
	return tok != "" && hmacEqual(tok, s.formKey)
}

// hmacEqual compares a secret in constant time; an empty b never matches.
func hmacEqual(a, b string) bool {
	return b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// apiError is the body of every error answer.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// fail answers an error: JSON for the API, a page for the console.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if isAPI(r) || s.pages == nil {
		var e apiError
		e.Error.Code, e.Error.Message = code, msg
		writeJSON(w, status, e)
		return
	}
	s.render(w, r, status, "error", map[string]any{"Status": status, "Code": code, "Message": msg})
}

// statusOf maps an operation's error to an HTTP status and code, once
// for the API and the pages.
func statusOf(err error) (int, string) {
	var inv *ops.InvalidEventError
	var filt *filterError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &inv):
		return http.StatusUnprocessableEntity, "invalid_event"
	case errors.Is(err, bus.ErrNotParked):
		return http.StatusConflict, "not_parked"
	case errors.As(err, &filt):
		return http.StatusBadRequest, "bad_request"
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "too_large"
	case errors.Is(err, ops.ErrNotConnected):
		return http.StatusServiceUnavailable, "not_connected"
	}
	return http.StatusInternalServerError, "failed"
}

func (s *Server) failErr(w http.ResponseWriter, r *http.Request, err error) {
	status, code := statusOf(err)
	s.fail(w, r, status, code, err.Error())
}

// filterError marks a filter the caller typed wrong (400).
type filterError struct{ err error }

func (e *filterError) Error() string { return "filter: " + e.err.Error() }
func (e *filterError) Unwrap() error { return e.err }

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Ops.Status(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) apiStreams(w http.ResponseWriter, r *http.Request) {
	st, err := s.cfg.Ops.Status(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st.Streams)
}

func (s *Server) apiWorkers(w http.ResponseWriter, r *http.Request) {
	ws, err := s.cfg.Ops.Workers(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ws)
}

func (s *Server) apiResync(w http.ResponseWriter, r *http.Request) {
	runs, err := s.cfg.Ops.ResyncRuns(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

func (s *Server) apiVerify(w http.ResponseWriter, r *http.Request) {
	reports, err := s.cfg.Ops.VerifyReports(r.Context())
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, reports)
}

// queryFilter reads a parked-message filter from a query string or form.
func (s *Server) queryFilter(r *http.Request) (bus.ParkedFilter, error) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	f, err := ops.ParseFilter(ops.FilterInput{Entity: q.Get("entity"), Reason: q.Get("reason"), Stream: q.Get("stream"),
		Since: q.Get("since"), Until: q.Get("until"), Limit: q.Get("limit"), IDs: q["id"]}, s.cfg.Now())
	if err != nil {
		return f, &filterError{err}
	}
	return f, nil
}

func (s *Server) apiParkedList(w http.ResponseWriter, r *http.Request) {
	f, err := s.queryFilter(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	msgs, err := s.cfg.Ops.ListParked(r.Context(), f)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if msgs == nil {
		msgs = []bus.ParkedMessage{}
	}
	writeJSON(w, http.StatusOK, msgs)
}

func (s *Server) apiParkedShow(w http.ResponseWriter, r *http.Request) {
	m, err := s.cfg.Ops.ShowParked(r.Context(), r.PathValue("id"))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// countResult is the answer of a replay or purge.
type countResult struct {
	Action string `json:"action"`
	Count  int    `json:"count"`
}

// The actions: each changes the deployment through ops and writes the
// audit line; the API handlers and the page forms both call them.

func (s *Server) replayOne(r *http.Request, id string) error {
	n, err := s.cfg.Ops.ReplayParked(r.Context(), bus.ParkedFilter{IDs: []string{id}})
	if err == nil && n == 0 {
		err = fmt.Errorf("parked message %s: %w", id, bus.ErrNotParked)
	}
	s.audit(r, "replay", id, err)
	return err
}

func (s *Server) purgeOne(r *http.Request, id string) error {
	n, err := s.cfg.Ops.PurgeParked(r.Context(), bus.ParkedFilter{IDs: []string{id}})
	if err == nil && n == 0 {
		err = fmt.Errorf("parked message %s: %w", id, bus.ErrNotParked)
	}
	s.audit(r, "purge", id, err)
	return err
}

func (s *Server) editAndReplay(r *http.Request, id string, body []byte) (event.Event, error) {
	ev, err := s.cfg.Ops.EditAndReplay(r.Context(), id, body)
	s.audit(r, "edit-and-replay", id, err, "entity", ev.Entity, "key", ev.Key, "version", ev.Version)
	return ev, err
}

func (s *Server) replayMany(r *http.Request, f bus.ParkedFilter) (int, error) {
	n, err := s.cfg.Ops.ReplayParked(r.Context(), f)
	s.audit(r, "replay", describe(f), err, "count", n)
	return n, err
}

func (s *Server) purgeMany(r *http.Request, f bus.ParkedFilter) (int, error) {
	n, err := s.cfg.Ops.PurgeParked(r.Context(), f)
	s.audit(r, "purge", describe(f), err, "count", n)
	return n, err
}

func (s *Server) setPaused(r *http.Request, stream bus.Stream, pause bool, reason string) (bool, error) {
	action := "resume"
	if pause {
		action = "pause"
	}
	was, err := s.cfg.Ops.SetPaused(r.Context(), stream, pause, "console:"+s.operator(r), reason)
	s.audit(r, action, string(stream), err, "reason", reason)
	return was, err
}

// operator is the caller's name: the X-Eventsync-Operator header, else
// the name given at sign in, else "anonymous".
func (s *Server) operator(r *http.Request) string {
	name := cleanName(r.Header.Get("X-Eventsync-Operator"))
	if c, err := r.Cookie(operatorCookie); name == "" && err == nil {
		v, _ := url.QueryUnescape(c.Value)
		name = cleanName(v)
	}
	if name == "" {
		name = "anonymous"
	}
	return name
}

// describe renders a filter for the audit log.
func describe(f bus.ParkedFilter) string {
	if ops.Empty(f) {
		return fmt.Sprintf("all parked (limit %d)", f.Limit)
	}
	return fmt.Sprintf("entity=%q reason~%q stream=%q ids=%v since=%s until=%s limit=%d",
		f.Entity, f.ReasonContains, f.Stream, f.IDs, when(f.Since), when(f.Until), f.Limit)
}

func (s *Server) apiParkedReplayOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := s.replayOne(r, id); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, countResult{Action: "replay", Count: 1})
}

func (s *Server) apiParkedPurgeOne(w http.ResponseWriter, r *http.Request) {
	if err := s.purgeOne(r, r.PathValue("id")); err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, countResult{Action: "purge", Count: 1})
}

// editRequest is the body of POST /api/v1/parked/{id}/edit: the new body,
// as a JSON object or as a string holding one.
type editRequest struct {
	Body json.RawMessage `json:"body"`
}

// editedBody returns the event body an edit request carries.
func editedBody(raw []byte) ([]byte, error) {
	var req editRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return nil, &filterError{fmt.Errorf("request body: want {\"body\": {…the event…}}: %w", err)}
	}
	if len(req.Body) == 0 {
		return nil, &filterError{errors.New("request body: \"body\" is missing")}
	}
	if req.Body[0] == '"' {
		var s string
		if err := json.Unmarshal(req.Body, &s); err != nil {
			return nil, &filterError{err}
		}
		if s == "" {
			return nil, &filterError{errors.New("request body: \"body\" is empty")}
		}
		return []byte(s), nil
	}
	return req.Body, nil
}

func (s *Server) apiParkedEdit(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	body, err := editedBody(raw)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	ev, err := s.editAndReplay(r, r.PathValue("id"), body)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": "edit-and-replay", "count": 1, "entity": ev.Entity, "key": ev.Key, "version": ev.Version})
}

// filterRequest is the body of the bulk replay and purge calls.
type filterRequest struct {
	Entity  string   `json:"entity"`
	Reason  string   `json:"reason"`
	Stream  string   `json:"stream"`
	Since   string   `json:"since"`
	Until   string   `json:"until"`
	Limit   int      `json:"limit"`
	IDs     []string `json:"ids"`
	Confirm bool     `json:"confirm"`
}

func (s *Server) bodyFilter(r *http.Request) (bus.ParkedFilter, bool, error) {
	var req filterRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		return bus.ParkedFilter{}, false, &filterError{fmt.Errorf("request body: %w", err)}
	}
	f, err := ops.ParseFilter(ops.FilterInput{Entity: req.Entity, Reason: req.Reason, Stream: req.Stream,
		Since: req.Since, Until: req.Until, Limit: strconv.Itoa(req.Limit), IDs: req.IDs}, s.cfg.Now())
	if err != nil {
		return f, false, &filterError{err}
	}
	return f, req.Confirm, nil
}

func (s *Server) apiParkedReplay(w http.ResponseWriter, r *http.Request) {
	f, _, err := s.bodyFilter(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	n, err := s.replayMany(r, f)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, countResult{Action: "replay", Count: n})
}

func (s *Server) apiParkedPurge(w http.ResponseWriter, r *http.Request) {
	f, confirm, err := s.bodyFilter(r)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	if !confirm {
		s.fail(w, r, http.StatusBadRequest, "confirm", "a purge deletes messages for good: list them with the same filter first, then send \"confirm\": true")
		return
	}
	n, err := s.purgeMany(r, f)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, countResult{Action: "purge", Count: n})
}

func (s *Server) apiPause(w http.ResponseWriter, r *http.Request) {
	stream, err := bus.ParseStream(r.PathValue("stream"))
	if err != nil {
		s.fail(w, r, http.StatusNotFound, "not_found", err.Error())
		return
	}
	pause := r.URL.Path == apiPrefix+"streams/"+string(stream)+"/pause"
	var req struct {
		Reason string `json:"reason"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		s.failErr(w, r, &filterError{fmt.Errorf("request body: %w", err)})
		return
	}
	was, err := s.setPaused(r, stream, pause, cleanText(req.Reason, 200))
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"stream": stream, "paused": pause, "was_paused": was})
}
