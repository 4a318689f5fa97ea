package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/ops"
	"github.com/eventsync/eventsync/internal/verify"
)

// defaultPageLimit bounds a parked listing on the page unless the filter
// asks for another limit.
const defaultPageLimit = 200

func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.pageOverview)
	mux.HandleFunc("GET /parked", s.pageParked)
	mux.HandleFunc("GET /parked/{id}", s.pageParkedShow)
	mux.HandleFunc("GET /resync", s.pageResync)
	mux.HandleFunc("GET /verify", s.pageVerify)
	mux.HandleFunc("GET /login", s.pageLogin)
	mux.HandleFunc("POST /login", s.postLogin)
	mux.HandleFunc("POST /logout", s.postLogout)
	mux.Handle("POST /parked/{id}/edit", s.mutation(s.postEdit))
	mux.Handle("POST /parked/{id}/replay", s.mutation(s.postReplayOne))
	mux.Handle("POST /parked/{id}/purge", s.mutation(s.postPurgeOne))
	mux.Handle("POST /parked/replay", s.mutation(s.postReplay))
	mux.Handle("POST /parked/purge", s.mutation(s.postPurge))
	mux.Handle("POST /streams/{stream}/pause", s.mutation(s.postPause))
	mux.Handle("POST /streams/{stream}/resume", s.mutation(s.postPause))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "not_found", "no such page")
	})
}

var funcs = template.FuncMap{
	"count": func(n int64) string {
		if n < 0 {
			return "?"
		}
		return fmt.Sprint(n)
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		d := now.Sub(t)
		if d < 0 {
			d = 0
		}
		return roundDuration(d) + " ago"
	},
	"when": when,
	"secs": func(s float64) string {
		if s < 0 {
			return "—"
		}
		return roundDuration(time.Duration(s * float64(time.Second)))
	},
	"list": func(s ...string) []string { return s },
	"reports": func(p page, r []verify.LastReport) reportsData {
		return reportsData{Page: p, Reports: r, Max: verify.LastSamples}
	},
	"rate": func(r float64) string { return fmt.Sprintf("%.1f", r) },
	"dur":  func(s float64) string { return fmtSeconds(s) },
	"pct":  func(p float64) string { return fmt.Sprintf("%.1f", p) },
	"sum": func(m map[bus.Stream]int64) int64 {
		var n int64
		for _, v := range m {
			n += v
		}
		return n
	},
	"short": func(s string, n int) string {
		s = strings.ReplaceAll(s, "\n", " ")
		if len(s) > n {
			return s[:n] + "…"
		}
		return s
	},
	"results": func(m map[string]int64) string {
		keys := make([]string, 0, len(m))
		for k, v := range m {
			if v != 0 {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s %d", k, m[k])
		}
		return strings.Join(parts, ", ")
	},
	"entityOf": func(body []byte) string {
		var probe struct {
			Entity string `json:"entity"`
			Key    string `json:"key"`
		}
		if json.Unmarshal(body, &probe) != nil || probe.Entity == "" {
			return "(not an event)"
		}
		return probe.Entity + " " + probe.Key
	},
}

func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// fmtSeconds renders a lag: milliseconds below a second, then
// seconds, then whole durations.
func fmtSeconds(s float64) string {
	switch {
	case s < 1:
		return fmt.Sprintf("%.0fms", s*1000)
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	}
	return roundDuration(time.Duration(s * float64(time.Second)))
}

func roundDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// parsePages parses every page with the shared layout.
func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "parked", "parked_show", "confirm", "resync", "verify", "login", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/runs.html", "templates/reports.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// page is what every template gets besides its own data.
type page struct {
	Title      string
	Deployment string
	Now        time.Time
	Flash      string
	FlashError bool
	SignedIn   bool
	CanChange  bool // a token is configured
	Operator   string
	CSRF       string
	Path       string
	Data       any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	p := page{Title: name, Deployment: s.cfg.Deployment, Now: s.cfg.Now(), Data: data, Path: r.URL.Path,
		CanChange: s.cfg.Token != ""}
	if s.authorised(r) != "" {
		p.SignedIn, p.CSRF, p.Operator = true, s.formKey, s.operator(r)
	}
	if c, err := r.Cookie(flashCookie); err == nil {
		if v, err := url.QueryUnescape(c.Value); err == nil {
			p.Flash, p.FlashError = strings.TrimPrefix(v, "!"), strings.HasPrefix(v, "!")
		}
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	var buf bytes.Buffer
	if err := s.pages[name].Execute(&buf, p); err != nil {
		s.log.Error("console: render", "page", name, "error", err)
		http.Error(w, "console: could not render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// redirect ends a form post: the flash message for the next page, then
// 303 to where the operator continues.
func redirect(w http.ResponseWriter, r *http.Request, to, msg string, isErr bool) {
	if isErr {
		msg = "!" + msg
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: "/", MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, to, http.StatusSeeOther)
}

type overviewData struct {
	Status  ops.ClusterStatus
	Parked  int64
	Runs    []ops.ResyncRun
	Reports []verify.LastReport
	Err     string
}

// reportsData is what the "reports" template gets: the page (for its
// clock) and the last verify reports.
type reportsData struct {
	Page    page
	Reports []verify.LastReport
	Max     int
	Err     string
}

func (s *Server) pageOverview(w http.ResponseWriter, r *http.Request) {
	var d overviewData
	var errs []string
	st, err := s.cfg.Ops.Status(r.Context())
	if err != nil {
		errs = append(errs, err.Error())
	}
	d.Status, d.Parked = st, -1
	for _, ss := range st.Streams {
		d.Parked = ss.Parked
	}
	if d.Runs, err = s.cfg.Ops.ResyncRuns(r.Context()); err != nil {
		errs = append(errs, err.Error())
	}
	if len(d.Runs) > 5 {
		d.Runs = d.Runs[:5]
	}
	if d.Reports, err = s.cfg.Ops.VerifyReports(r.Context()); err != nil {
		errs = append(errs, err.Error())
	}
	d.Err = strings.Join(errs, "; ")
	s.render(w, r, http.StatusOK, "overview", d)
}

type parkedData struct {
	Filter   url.Values
	Messages []bus.ParkedMessage
	Limit    int
	Full     bool // the listing stopped at its limit
	Err      string
	Query    string
}

func (s *Server) pageParked(w http.ResponseWriter, r *http.Request) {
	d := parkedData{Filter: r.URL.Query(), Query: r.URL.RawQuery}
	f, err := s.queryFilter(r)
	if err != nil {
		d.Err = err.Error()
		s.render(w, r, http.StatusBadRequest, "parked", d)
		return
	}
	if f.Limit == 0 {
		f.Limit = defaultPageLimit
	}
	d.Limit = f.Limit
	if d.Messages, err = s.cfg.Ops.ListParked(r.Context(), f); err != nil {
		d.Err = err.Error()
	}
	d.Full = len(d.Messages) >= f.Limit
	s.render(w, r, http.StatusOK, "parked", d)
}

type showData struct {
	Msg     bus.ParkedMessage
	Body    string // pretty when it is JSON
	Headers []header
	Err     string
}

type header struct{ Name, Value string }

func (s *Server) pageParkedShow(w http.ResponseWriter, r *http.Request) {
	m, err := s.cfg.Ops.ShowParked(r.Context(), r.PathValue("id"))
	if err != nil {
		if errors.Is(err, bus.ErrNotParked) {
			redirect(w, r, "/parked", fmt.Sprintf("message %s is not parked (any more): replayed or purged already", r.PathValue("id")), true)
			return
		}
		s.failErr(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "parked_show", showOf(m, ""))
}

func showOf(m bus.ParkedMessage, edited string) showData {
	d := showData{Msg: m, Body: edited}
	if d.Body == "" {
		d.Body = string(m.Body)
		var buf bytes.Buffer
		if json.Valid(m.Body) && json.Indent(&buf, m.Body, "", "  ") == nil {
			d.Body = buf.String()
		}
	}
	for k, v := range m.Headers {
		d.Headers = append(d.Headers, header{k, v})
	}
	sort.Slice(d.Headers, func(i, j int) bool { return d.Headers[i].Name < d.Headers[j].Name })
	return d
}

func (s *Server) postEdit(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	body := r.PostFormValue("body")
	ev, err := s.editAndReplay(r, id, []byte(body))
	var inv *ops.InvalidEventError
	switch {
	case errors.As(err, &inv):
		// Show the page again with the edited body and the validator's
		// message: nothing was replayed.
		m, serr := s.cfg.Ops.ShowParked(r.Context(), id)
		if serr != nil {
			s.failErr(w, r, serr)
			return
		}
		d := showOf(m, body)
		d.Err = "Not replayed: " + err.Error()
		s.render(w, r, http.StatusUnprocessableEntity, "parked_show", d)
	case errors.Is(err, bus.ErrNotParked):
		redirect(w, r, "/parked", fmt.Sprintf("Nothing done: message %s is not parked any more (replayed or purged by someone else)", id), true)
	case err != nil:
		s.failErr(w, r, err)
	default:
		redirect(w, r, "/parked", fmt.Sprintf("Replayed %s %s version %d (edited) to its stream", ev.Entity, ev.Key, ev.Version), false)
	}
}

func (s *Server) postReplayOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch err := s.replayOne(r, id); {
	case errors.Is(err, bus.ErrNotParked):
		redirect(w, r, "/parked", fmt.Sprintf("Nothing done: message %s is not parked any more (replayed or purged by someone else)", id), true)
	case err != nil:
		s.failErr(w, r, err)
	default:
		redirect(w, r, "/parked", fmt.Sprintf("Replayed message %s to its stream", id), false)
	}
}

// confirmData is the page asking before a purge.
type confirmData struct {
	Action   string // form action
	Count    int
	Messages []bus.ParkedMessage
	Hidden   url.Values
	Back     string
}

func (s *Server) postPurgeOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if r.PostFormValue("confirm") != "yes" {
		m, err := s.cfg.Ops.ShowParked(r.Context(), id)
		if errors.Is(err, bus.ErrNotParked) {
			redirect(w, r, "/parked", fmt.Sprintf("Nothing to purge: message %s is not parked any more", id), true)
			return
		}
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		s.render(w, r, http.StatusOK, "confirm", confirmData{Action: "/parked/" + url.PathEscape(id) + "/purge", Count: 1,
			Messages: []bus.ParkedMessage{m}, Back: "/parked/" + url.PathEscape(id)})
		return
	}
	switch err := s.purgeOne(r, id); {
	case errors.Is(err, bus.ErrNotParked):
		redirect(w, r, "/parked", fmt.Sprintf("Nothing done: message %s is not parked any more (replayed or purged by someone else)", id), true)
	case err != nil:
		s.failErr(w, r, err)
	default:
		redirect(w, r, "/parked", fmt.Sprintf("Purged message %s", id), false)
	}
}

// formFilter is the selection a bulk form names: the ticked ids, or with
// all=1 the filter fields.
func (s *Server) formFilter(r *http.Request) (bus.ParkedFilter, error) {
	if err := r.ParseForm(); err != nil {
		return bus.ParkedFilter{}, &filterError{err}
	}
	if r.PostForm.Get("all") != "1" && len(r.PostForm["id"]) == 0 {
		return bus.ParkedFilter{}, &filterError{errors.New("nothing selected: tick messages, or use the buttons for all matching")}
	}
	if r.PostForm.Get("all") != "1" {
		r.PostForm.Del("entity")
		r.PostForm.Del("reason")
		r.PostForm.Del("stream")
		r.PostForm.Del("since")
		r.PostForm.Del("until")
		r.PostForm.Del("limit")
	}
	return s.queryFilter(r)
}

func backTo(r *http.Request) string {
	if q := r.PostFormValue("back"); strings.HasPrefix(q, "/parked") {
		return safeNext(q)
	}
	return "/parked"
}

func (s *Server) postReplay(w http.ResponseWriter, r *http.Request) {
	f, err := s.formFilter(r)
	if err != nil {
		redirect(w, r, backTo(r), err.Error(), true)
		return
	}
	n, err := s.replayMany(r, f)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	msg := fmt.Sprintf("Replayed %d message(s) to their stream", n)
	if len(f.IDs) > n {
		msg += fmt.Sprintf("; %d of the selected were not parked any more (replayed or purged by someone else)", len(f.IDs)-n)
	}
	redirect(w, r, backTo(r), msg, len(f.IDs) > n)
}

func (s *Server) postPurge(w http.ResponseWriter, r *http.Request) {
	f, err := s.formFilter(r)
	if err != nil {
		redirect(w, r, backTo(r), err.Error(), true)
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		lf := f
		if lf.Limit == 0 {
			lf.Limit = defaultPageLimit
		}
		msgs, err := s.cfg.Ops.ListParked(r.Context(), lf)
		if err != nil {
			s.failErr(w, r, err)
			return
		}
		hidden := url.Values{}
		for k, v := range r.PostForm {
			if k != "_csrf" && k != "confirm" {
				hidden[k] = v
			}
		}
		s.render(w, r, http.StatusOK, "confirm", confirmData{Action: "/parked/purge", Count: len(msgs), Messages: msgs, Hidden: hidden, Back: backTo(r)})
		return
	}
	n, err := s.purgeMany(r, f)
	if err != nil {
		s.failErr(w, r, err)
		return
	}
	redirect(w, r, backTo(r), fmt.Sprintf("Purged %d message(s)", n), false)
}

func (s *Server) postPause(w http.ResponseWriter, r *http.Request) {
	stream, err := bus.ParseStream(r.PathValue("stream"))
	if err != nil {
		s.fail(w, r, http.StatusNotFound, "not_found", err.Error())
		return
	}
	pause := strings.HasSuffix(r.URL.Path, "/pause")
	if _, err := s.setPaused(r, stream, pause, cleanText(r.PostFormValue("reason"), 200)); err != nil {
		s.failErr(w, r, err)
		return
	}
	if pause {
		redirect(w, r, "/", fmt.Sprintf("Paused %s: workers stop pulling it within a second; its events wait in the queue", stream), false)
	} else {
		redirect(w, r, "/", fmt.Sprintf("Resumed %s", stream), false)
	}
}

func (s *Server) pageResync(w http.ResponseWriter, r *http.Request) {
	runs, err := s.cfg.Ops.ResyncRuns(r.Context())
	d := overviewData{Runs: runs}
	if err != nil {
		d.Err = err.Error()
	}
	s.render(w, r, http.StatusOK, "resync", d)
}

func (s *Server) pageVerify(w http.ResponseWriter, r *http.Request) {
	reports, err := s.cfg.Ops.VerifyReports(r.Context())
	d := reportsData{Reports: reports, Max: verify.LastSamples, Page: page{Now: s.cfg.Now()}}
	if err != nil {
		d.Err = err.Error()
	}
	s.render(w, r, http.StatusOK, "verify", d)
}

func (s *Server) pageLogin(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login", map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// postLogin checks the token and gives the browser its session cookie.
// The CrossOriginProtection around every handler keeps another site from
// signing a browser in.
func (s *Server) postLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	next := safeNext(r.PostFormValue("next"))
	tok := strings.TrimSpace(r.PostFormValue("token"))
	if s.cfg.Token == "" || !hmacEqual(tok, s.cfg.Token) {
		s.audit(r, "sign-in", "", errors.New("wrong token"))
		s.render(w, r, http.StatusUnauthorized, "login", map[string]any{"Next": next, "Err": "That is not the console's token."})
		return
	}
	secure := r.TLS != nil
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.session, Path: "/", HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode, MaxAge: 12 * 3600})
	name := cleanName(r.PostFormValue("operator"))
	http.SetCookie(w, &http.Cookie{Name: operatorCookie, Value: url.QueryEscape(name), Path: "/", HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode, MaxAge: 12 * 3600})
	r.AddCookie(&http.Cookie{Name: operatorCookie, Value: name})
	s.audit(r, "sign-in", "", nil)
	redirect(w, r, next, "Signed in", false)
}

func (s *Server) postLogout(w http.ResponseWriter, r *http.Request) {
	for _, n := range []string{sessionCookie, operatorCookie} {
		http.SetCookie(w, &http.Cookie{Name: n, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	redirect(w, r, "/", "Signed out", false)
}
