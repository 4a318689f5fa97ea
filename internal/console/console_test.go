package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	goredis "github.com/redis/go-redis/v9"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/bus/bustest"
	"github.com/eventsync/eventsync/bus/rabbitmq"
	"github.com/eventsync/eventsync/bus/rabbitmq/rabbitmqtest"
	"github.com/eventsync/eventsync/internal/control"
	"github.com/eventsync/eventsync/internal/ops"
	"github.com/eventsync/eventsync/internal/resync"
	"github.com/eventsync/eventsync/internal/testenv"
	"github.com/eventsync/eventsync/internal/verify"
	"github.com/eventsync/eventsync/store"
	pgstore "github.com/eventsync/eventsync/store/postgres"
	redisstore "github.com/eventsync/eventsync/store/redis"
)

const testToken = "0123456789abcdef-test-token"

// logBuffer collects the console's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a console over a RabbitMQ bus and a state store of its own.
type env struct {
	t     *testing.T
	ctx   context.Context
	bus   *rabbitmq.Bus
	store store.Store
	srv   *httptest.Server
	log   *logBuffer
}

func openStore(t *testing.T, ctx context.Context, kind, ns string) store.Store {
	t.Helper()
	var (
		st  store.Store
		err error
	)
	switch kind {
	case "redis":
		u := testenv.Redis(t)
		t.Cleanup(func() { deleteRedisPrefix(t, u, ns) })
		st, err = redisstore.Open(ctx, redisstore.Config{URL: u, Prefix: ns, PoolSize: 2, Logger: slog.New(slog.DiscardHandler)})
	case "postgres":
		dsn := testenv.Postgres(t)
		t.Cleanup(func() { dropSchema(t, dsn, ns) })
		st, err = pgstore.Open(ctx, pgstore.Config{DSN: dsn, Schema: ns, MaxConns: 2, Logger: slog.New(slog.DiscardHandler)})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newEnv(t *testing.T, storeKind string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	b := rabbitmqtest.Open(t, rabbitmq.Config{})
	e := &env{t: t, ctx: ctx, bus: b, store: openStore(t, ctx, storeKind, b.Namespace()), log: &logBuffer{}}
	s, err := New(Config{Addr: "127.0.0.1:0", Token: testToken, Deployment: b.Namespace(),
		Ops:    &ops.Ops{Bus: b, Control: e.store, Entities: []string{"listing"}},
		Logger: slog.New(slog.NewTextHandler(e.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func deleteRedisPrefix(t *testing.T, u, prefix string) {
	opts, err := goredis.ParseURL(u)
	if err != nil {
		t.Error(err)
		return
	}
	c := goredis.NewClient(opts)
	defer func() { _ = c.Close() }()
	ctx := context.Background()
	iter := c.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		c.Del(ctx, iter.Val())
	}
}

func dropSchema(t *testing.T, dsn, schema string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
}

// park publishes bodies to live and parks each with reason.
func (e *env) park(reason string, bodies ...[]byte) {
	e.t.Helper()
	msgs := make([]bus.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = bus.Message{Body: b, Headers: map[string]string{"trace-id": "t-1"}}
	}
	if err := e.bus.Publish(e.ctx, bus.Live, msgs...); err != nil {
		e.t.Fatal(err)
	}
	sub, err := e.bus.Subscribe(e.ctx, bus.Live, bus.SubscribeOptions{Prefetch: len(bodies)})
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	for range bodies {
		select {
		case d := <-sub.Deliveries():
			if err := d.Park(e.ctx, reason); err != nil {
				e.t.Fatal(err)
			}
		case <-e.ctx.Done():
			e.t.Fatal("no delivery to park")
		}
	}
}

func (e *env) parked() []bus.ParkedMessage {
	e.t.Helper()
	msgs, err := e.bus.ListParked(e.ctx, bus.ParkedFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// call sends one request; token "" sends none.
func (e *env) call(method, path, token, body string, hdr ...string) (int, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if strings.HasPrefix(body, "{") {
		req.Header.Set("Content-Type", "application/json")
	} else if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (e *env) paused(s bus.Stream) bool {
	e.t.Helper()
	p, err := control.Paused(e.ctx, e.store, s)
	if err != nil {
		e.t.Fatal(err)
	}
	return p != nil
}

// nextLive takes the next live delivery, acks it and returns its body.
func (e *env) nextLive() string {
	e.t.Helper()
	sub, err := e.bus.Subscribe(e.ctx, bus.Live, bus.SubscribeOptions{Prefetch: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	select {
	case d := <-sub.Deliveries():
		_ = d.Ack(e.ctx)
		return string(d.Body())
	case <-time.After(10 * time.Second):
		e.t.Fatal("nothing delivered on live")
	}
	return ""
}

func TestMutationsNeedTheToken(t *testing.T) {
	for _, kind := range []string{"redis", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, kind)
			e.park("HTTP 422 name too long", bustest.EventBody("listing", "1", 1))
			id := e.parked()[0].ID

			calls := []struct{ method, path, body string }{
				{"POST", "/api/v1/parked/" + id + "/replay", ""},
				{"POST", "/api/v1/parked/" + id + "/purge", ""},
				{"POST", "/api/v1/parked/" + id + "/edit", `{"body":` + string(bustest.EventBody("listing", "1", 2)) + `}`},
				{"POST", "/api/v1/parked/replay", `{}`},
				{"POST", "/api/v1/parked/purge", `{"confirm":true}`},
				{"POST", "/api/v1/streams/live/pause", `{"reason":"x"}`},
				{"POST", "/parked/" + id + "/replay", ""},
				{"POST", "/streams/live/pause", ""},
			}
			for _, tok := range []string{"", "wrong-token-wrong-token"} {
				for _, c := range calls {
					code, body, h := e.call(c.method, c.path, tok, c.body)
					if code != http.StatusUnauthorized {
						t.Errorf("%s %s with token %q: %d %s, want 401", c.method, c.path, tok, code, body)
					}
					if strings.HasPrefix(c.path, "/api/") && h.Get("WWW-Authenticate") == "" {
						t.Errorf("%s %s: 401 without WWW-Authenticate", c.method, c.path)
					}
				}
			}
			if n := len(e.parked()); n != 1 || e.paused(bus.Live) {
				t.Fatalf("refused calls changed something: %d parked (want 1), live paused %v", n, e.paused(bus.Live))
			}
			if !strings.Contains(e.log.String(), "result=refused") {
				t.Errorf("refused calls left no audit line:\n%s", e.log.String())
			}

			// Reads are open on loopback. (The broker's count of the parked
			// queue may lag a listing that just handed its messages back.)
			var code int
			var body string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				code, body, _ = e.call("GET", "/api/v1/status", "", "")
				var st ops.ClusterStatus
				if code == 200 && json.Unmarshal([]byte(body), &st) == nil && len(st.Streams) == 2 && st.Streams[0].Parked == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("status: %d %s", code, body)
				}
			}

			code, body, _ = e.call("POST", "/api/v1/streams/live/pause", testToken, `{"reason":"maintenance"}`, "X-Eventsync-Operator", "alice")
			if code != 200 || !e.paused(bus.Live) {
				t.Fatalf("pause with the token: %d %s", code, body)
			}
			p, _ := control.Paused(e.ctx, e.store, bus.Live)
			if p.Reason != "maintenance" || p.By != "console:alice" {
				t.Errorf("pause record %+v", p)
			}
			logs := e.log.String()
			if !strings.Contains(logs, `msg="console audit" who="alice (bearer) from 127.0.0.1:`) || !strings.Contains(logs, "action=pause target=live") {
				t.Errorf("no audit line naming who paused what:\n%s", logs)
			}
			code, body, _ = e.call("GET", "/api/v1/streams", "", "")
			if code != 200 || !strings.Contains(body, `"paused": true`) {
				t.Errorf("streams after pause: %d %s", code, body)
			}
			if code, body, _ = e.call("POST", "/api/v1/streams/live/resume", testToken, ""); code != 200 || e.paused(bus.Live) {
				t.Fatalf("resume: %d %s", code, body)
			}
			if code, _, _ = e.call("POST", "/api/v1/streams/parked/pause", testToken, ""); code != 404 {
				t.Errorf("pause of an unknown stream: %d, want 404", code)
			}
		})
	}
}

func TestEditReplayAndPurgeThroughTheAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "redis")
	e.park("HTTP 422: name too long", bustest.EventBody("listing", "1", 1))
	e.park("HTTP 400", bustest.EventBody("listing", "2", 1), bustest.EventBody("listing", "3", 1))
	var bad bus.ParkedMessage
	for _, m := range e.parked() {
		if strings.Contains(m.Reason, "422") {
			bad = m
		}
	}

	// List with a filter, show with headers.
	code, body, _ := e.call("GET", "/api/v1/parked?reason=422&stream=live&since=1h", "", "")
	var list []bus.ParkedMessage
	if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].ID != bad.ID {
		t.Fatalf("filtered list: %d %s", code, body)
	}
	if code, body, _ = e.call("GET", "/api/v1/parked?stream=nope", "", ""); code != 400 || !strings.Contains(body, "stream") {
		t.Errorf("bad filter: %d %s", code, body)
	}
	code, body, _ = e.call("GET", "/api/v1/parked/"+bad.ID, "", "")
	if code != 200 || !strings.Contains(body, `"trace-id": "t-1"`) || !strings.Contains(body, bus.HeaderReason) {
		t.Errorf("show: %d %s", code, body)
	}

	// An edited body that is no valid event is refused with the
	// validator's message, and nothing is replayed.
	for body, want := range map[string]string{
		`{"body":{"id":"x","entity":"listing","key":"1","version":"2","op":"upsert","data":{}}}`: `field \"version\"`,
		`{"body":"{not json"}`: "invalid event",
		`{"body":{"id":"x","entity":"guest","key":"1","version":2,"op":"upsert","data":{}}}`: "not configured in the sink",
	} {
		code, resp, _ := e.call("POST", "/api/v1/parked/"+bad.ID+"/edit", testToken, body)
		if code != http.StatusUnprocessableEntity || !strings.Contains(resp, "invalid_event") || !strings.Contains(resp, want) {
			t.Errorf("edit with %s: %d %s, want 422 mentioning %s", body, code, resp, want)
		}
	}
	if len(e.parked()) != 3 {
		t.Fatalf("a refused edit changed the parked queue")
	}
	if st, _ := e.bus.Stats(e.ctx, bus.Live); st.Ready != 0 {
		t.Fatalf("a refused edit published: %+v", st)
	}

	edited := `{"id":"fix","entity":"listing","key":"1","version":2,"op":"upsert","data":{"name":"short"}}`
	code, body, _ = e.call("POST", "/api/v1/parked/"+bad.ID+"/edit", testToken, `{"body":`+edited+`}`)
	if code != 200 || !strings.Contains(body, `"version": 2`) {
		t.Fatalf("edit: %d %s", code, body)
	}
	if got := e.nextLive(); got != edited {
		t.Errorf("replayed %s, want the edited body", got)
	}
	if !strings.Contains(e.log.String(), "action=edit-and-replay target="+bad.ID) {
		t.Errorf("no audit line for the edit:\n%s", e.log.String())
	}
	// Another console's replay of the same message finds it gone.
	for _, c := range []struct{ path, body string }{{"/edit", `{"body":` + edited + `}`}, {"/replay", ""}, {"/purge", ""}} {
		code, body, _ = e.call("POST", "/api/v1/parked/"+bad.ID+c.path, testToken, c.body)
		if code != http.StatusConflict || !strings.Contains(body, "not_parked") {
			t.Errorf("%s of a message replayed already: %d %s, want 409 not_parked", c.path, code, body)
		}
	}
	if len(e.parked()) != 2 {
		t.Fatalf("parked after the edit: %d, want 2", len(e.parked()))
	}

	// Purge needs confirm; replay a selection.
	if code, body, _ = e.call("POST", "/api/v1/parked/purge", testToken, `{"reason":"400"}`); code != 400 || !strings.Contains(body, "confirm") {
		t.Errorf("purge without confirm: %d %s", code, body)
	}
	ids := []string{}
	for _, m := range e.parked() {
		ids = append(ids, m.ID)
	}
	sel, _ := json.Marshal(map[string]any{"ids": ids[:1]})
	if code, body, _ = e.call("POST", "/api/v1/parked/replay", testToken, string(sel)); code != 200 || !strings.Contains(body, `"count": 1`) {
		t.Errorf("replay selection: %d %s", code, body)
	}
	_ = e.nextLive()
	if code, body, _ = e.call("POST", "/api/v1/parked/purge", testToken, `{"reason":"400","confirm":true}`); code != 200 || !strings.Contains(body, `"count": 1`) {
		t.Errorf("purge: %d %s", code, body)
	}
	if len(e.parked()) != 0 {
		t.Errorf("parked left after replay and purge: %d", len(e.parked()))
	}
	if code, _, _ = e.call("GET", "/api/v1/nothing", "", ""); code != 404 {
		t.Errorf("unknown API path: %d", code)
	}
}

// signIn returns the session cookies and the form token of a browser
// session.
func (e *env) signIn() (string, string) {
	e.t.Helper()
	form := url.Values{"token": {testToken}, "operator": {"bob"}, "next": {"/parked"}}
	code, body, h := e.call("POST", "/login", "", form.Encode())
	if code != http.StatusSeeOther || h.Get("Location") != "/parked" {
		e.t.Fatalf("sign in: %d %s", code, body)
	}
	var cookies []string
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == sessionCookie || c.Name == operatorCookie {
			cookies = append(cookies, c.Name+"="+c.Value)
		}
	}
	cookie := strings.Join(cookies, "; ")
	_, page, _ := e.call("GET", "/", "", "", "Cookie", cookie)
	i := strings.Index(page, `name="_csrf" value="`)
	if i < 0 {
		e.t.Fatalf("no form token on the overview after signing in:\n%s", page)
	}
	rest := page[i+len(`name="_csrf" value="`):]
	return cookie, rest[:strings.IndexByte(rest, '"')]
}

func TestPagesAndForms(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "redis")
	e.park("HTTP 422: <script>alert(1)</script>", bustest.EventBody("listing", "9", 1))
	id := e.parked()[0].ID

	// A resync run's checkpoint, as a run writes it after each page.
	now := time.Now().UTC()
	cp, _ := json.Marshal(resync.Checkpoint{RunID: "listing-run1", SpecHash: "h", Table: "listings", Entity: "listing",
		Rows: 250, Total: 1000, Segments: 1, Started: now.Add(-10 * time.Second), Updated: now})
	if err := e.store.SetControl(e.ctx, resync.CheckpointName("listing-run1"), cp, 0); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := e.call("GET", "/api/v1/resync", "", ""); code != 200 || !strings.Contains(body, `"percent": 25`) || !strings.Contains(body, `"state": "running"`) {
		t.Errorf("resync runs: %d %s", code, body)
	}
	for _, p := range []string{"/", "/resync"} {
		if _, body, _ := e.call("GET", p, "", ""); !strings.Contains(body, "listing-run1") || !strings.Contains(body, "250 / 1000") {
			t.Errorf("GET %s does not show the resync run", p)
		}
	}

	for _, p := range []string{"/", "/parked", "/parked?entity=listing", "/parked/" + id, "/resync", "/login", "/static/style.css"} {
		code, body, _ := e.call("GET", p, "", "")
		if code != 200 {
			t.Errorf("GET %s: %d", p, code)
		}
		if strings.Contains(body, "<script>alert") {
			t.Errorf("GET %s: the parked reason is not escaped", p)
		}
	}
	if _, body, _ := e.call("GET", "/parked", "", ""); !strings.Contains(body, id) || strings.Contains(body, `name="_csrf"`) {
		t.Errorf("parked page before sign-in: want the message and no forms")
	}
	if code, _, _ := e.call("POST", "/login", "", url.Values{"token": {"nope"}}.Encode()); code != 401 {
		t.Errorf("sign in with a wrong token: %d", code)
	}
	cookie, csrf := e.signIn()

	// A form post of a session without its form token, or from another
	// site, is refused and changes nothing.
	if code, _, _ := e.call("POST", "/streams/live/pause", "", "reason=x", "Cookie", cookie); code != 403 || e.paused(bus.Live) {
		t.Errorf("pause without the form token: %d", code)
	}
	form := url.Values{"_csrf": {csrf}, "reason": {"deploy"}}.Encode()
	if code, _, _ := e.call("POST", "/streams/live/pause", "", form, "Cookie", cookie, "Sec-Fetch-Site", "cross-site"); code != 403 || e.paused(bus.Live) {
		t.Errorf("cross-site pause: %d", code)
	}
	if code, _, _ := e.call("POST", "/streams/live/pause", "", form, "Cookie", cookie, "Origin", "http://evil.example"); code != 403 || e.paused(bus.Live) {
		t.Errorf("pause with a foreign Origin: %d", code)
	}
	code, _, h := e.call("POST", "/streams/live/pause", "", form, "Cookie", cookie, "Sec-Fetch-Site", "same-origin")
	if code != http.StatusSeeOther || !e.paused(bus.Live) {
		t.Fatalf("pause from the page: %d", code)
	}
	flash := ""
	for _, c := range (&http.Response{Header: h}).Cookies() {
		if c.Name == flashCookie {
			flash = c.Name + "=" + c.Value
		}
	}
	if _, body, _ := e.call("GET", "/", "", "", "Cookie", cookie+"; "+flash); !strings.Contains(body, "Paused live") || !strings.Contains(body, `id="resume-live"`) {
		t.Errorf("overview after pausing: no flash or no resume button")
	}
	if !strings.Contains(e.log.String(), `who="bob (session)`) {
		t.Errorf("audit line does not name the signed-in operator:\n%s", e.log.String())
	}

	// Edit from the page: an invalid body shows the validator's message and
	// keeps the text; a valid one replays.
	bad := url.Values{"_csrf": {csrf}, "body": {`{"id":"1","entity":"listing","key":"9","version":0,"op":"upsert","data":{}}`}}.Encode()
	code, body, _ := e.call("POST", "/parked/"+id+"/edit", "", bad, "Cookie", cookie)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "Not replayed: invalid event: field &#34;version&#34;") || !strings.Contains(body, "&#34;version&#34;:0") {
		t.Errorf("invalid edit from the page: %d\n%s", code, body)
	}
	good := url.Values{"_csrf": {csrf}, "body": {string(bustest.EventBody("listing", "9", 2))}}.Encode()
	if code, _, h = e.call("POST", "/parked/"+id+"/edit", "", good, "Cookie", cookie); code != http.StatusSeeOther || len(e.parked()) != 0 {
		t.Fatalf("edit from the page: %d", code)
	}
	// The same form posted again (another tab) says the message is gone.
	code, _, h = e.call("POST", "/parked/"+id+"/edit", "", good, "Cookie", cookie)
	if code != http.StatusSeeOther || !strings.Contains(h.Get("Set-Cookie"), "not+parked+any+more") {
		t.Errorf("second edit: %d %v", code, h)
	}
	if code, _, _ = e.call("POST", "/streams/live/resume", "", url.Values{"_csrf": {csrf}}.Encode(), "Cookie", cookie); code != http.StatusSeeOther || e.paused(bus.Live) {
		t.Errorf("resume from the page: %d", code)
	}

	// Purging a selection asks first.
	e.park("HTTP 400", bustest.EventBody("listing", "10", 1))
	pid := e.parked()[0].ID
	sel := url.Values{"_csrf": {csrf}, "id": {pid}}
	code, body, _ = e.call("POST", "/parked/purge", "", sel.Encode(), "Cookie", cookie)
	if code != 200 || !strings.Contains(body, "Purge 1 message(s)?") || len(e.parked()) != 1 {
		t.Fatalf("purge without confirmation: %d, %d parked\n%s", code, len(e.parked()), body)
	}
	sel.Set("confirm", "yes")
	if code, _, _ = e.call("POST", "/parked/purge", "", sel.Encode(), "Cookie", cookie); code != http.StatusSeeOther || len(e.parked()) != 0 {
		t.Errorf("confirmed purge: %d, %d parked", code, len(e.parked()))
	}
}

func TestAccessOffLoopback(t *testing.T) {
	o := &ops.Ops{}
	if _, err := New(Config{Addr: "0.0.0.0:9092", Ops: o}); err == nil || !strings.Contains(err.Error(), "needs a token") {
		t.Fatalf("off loopback without a token: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:9092", Ops: o, Token: "short"}); err == nil {
		t.Fatal("a short token was accepted")
	}
	s, err := New(Config{Addr: "0.0.0.0:9092", Ops: o, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, auth string
		want       int
	}{
		{"/api/v1/status", "", 401},
		{"/", "", http.StatusSeeOther},
		{"/login", "", 200},
		{"/static/style.css", "", 200},
		{"/api/v1/status", "Bearer " + testToken, 503}, // authorised; no bus connected
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("GET %s (%q): %d, want %d", c.path, c.auth, w.Code, c.want)
		}
	}

	// On loopback, a Host that is not loopback (DNS rebinding) is refused.
	s, err = New(Config{Addr: "127.0.0.1:9092", Ops: o})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/api/v1/status", nil)
	r.Host = "rebind.example:9092"
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host on loopback: %d", w.Code)
	}
	// Read-only without a token: mutations say why.
	r = httptest.NewRequest("POST", "/api/v1/streams/live/pause", nil)
	r.Host = "127.0.0.1:9092"
	w = httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code != 401 || !strings.Contains(w.Body.String(), "read-only") {
		t.Errorf("mutation on a console without a token: %d %s", w.Code, w.Body)
	}
}

// FuzzEditedBody feeds outside input (an edit call's request body) to its
// decoder: it never panics, and what it returns is the "body" it was given.
func FuzzEditedBody(f *testing.F) {
	f.Add(`{"body":{"id":"1","entity":"listing","key":"k","version":1,"op":"delete"}}`)
	f.Add(`{"body":"{\"id\":1}"}`)
	f.Add(`{"body":null}`)
	f.Add(`{}`)
	f.Add(`[`)
	f.Fuzz(func(t *testing.T, in string) {
		body, err := editedBody([]byte(in))
		if err != nil {
			return
		}
		if len(body) == 0 {
			t.Fatalf("editedBody(%q) accepted an empty body", in)
		}
		o := &ops.Ops{}
		_, _ = o.CheckEvent(body) // must not panic either
	})
}

// TestLastVerifyReports: the reports verify records in the store's control
// space (one per entity, the last one wins) are in the API, on the overview
// and on the verify page, escaped.
func TestLastVerifyReports(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "postgres")
	if code, body, _ := e.call("GET", "/api/v1/verify", "", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("no report yet: %d %s", code, body)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	older := verify.Last(verify.Report{Entity: "listing", Converged: true, Counts: verify.Counts{Expected: 3, Matching: 3}}, at.Add(-time.Hour), "old@h pid 1", "h")
	diverged := verify.Report{Entity: "listing", Source: "table listings", Target: "fake API", Counts: verify.Counts{Expected: 5, Matching: 2, Missing: 1, Extra: 1, Differing: 1, Duplicated: 1}}
	diverged.Samples.Differing = []verify.Sample{{Key: "k7", Field: "title", Expected: `"<script>x</script>"`, Remote: `"old"`}}
	for i := range 12 {
		diverged.Samples.Missing = append(diverged.Samples.Missing, verify.Sample{Key: fmt.Sprintf("m%02d", i), Version: 2})
	}
	for _, r := range []verify.LastReport{
		older,
		verify.Last(diverged, at, "ops@box pid 42", "box"),
		verify.Last(verify.Report{Entity: "host", Converged: true, Counts: verify.Counts{Expected: 4, Matching: 4}}, at, "ops@box pid 43", "box"),
	} {
		if err := verify.SaveLast(e.ctx, e.store, r); err != nil {
			t.Fatal(err)
		}
	}
	code, body, _ := e.call("GET", "/api/v1/verify", "", "")
	var got []verify.LastReport
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/verify: %d %v %s", code, err, body)
	}
	if len(got) != 2 || got[0].Entity != "host" || got[1].Entity != "listing" {
		t.Fatalf("reports: %+v, want host then listing", got)
	}
	l := got[1]
	if l.Converged || l.By != "ops@box pid 42" || !l.At.Equal(at) || l.Counts.Missing != 1 || l.Counts.Duplicated != 1 ||
		len(l.Samples.Missing) != verify.LastSamples || len(l.Samples.Differing) != 1 {
		t.Errorf("listing's last report: %+v", l)
	}

	_, overview, _ := e.call("GET", "/", "", "")
	for _, want := range []string{`id="verify-listing"`, `id="verify-host"`, "diverged", "converged", "ops@box pid 42"} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	code, page, _ := e.call("GET", "/verify", "", "")
	for _, want := range []string{`id="report-listing"`, "m09", "k7", "&lt;script&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("verify page lacks %q", want)
		}
	}
	if code != 200 || strings.Contains(page, "<script>") || strings.Contains(page, "m10") {
		t.Errorf("verify page: %d, unescaped or more than %d samples per category", code, verify.LastSamples)
	}
}

// TestOverviewShowsThrottleAndLag: the workers' heartbeats in the store
// (throttle state, recent lag) are on the overview and in /api/v1/status,
// per worker and summed up per stream and for the API.
func TestOverviewShowsThrottleAndLag(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "redis")
	held := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for _, w := range []control.WorkerStatus{
		{ID: "w1", Host: "h1", PID: 7, SeenAt: time.Now(), Breaker: "closed",
			Throttle: &control.ThrottleStatus{Rate: 25, Limit: 12, InFlight: map[bus.Stream]int64{bus.Live: 3}, HeldUntil: &held},
			Lag:      map[bus.Stream]control.Lag{bus.Live: {P50: 0.25, P99: 4.5, Events: 300}}},
		{ID: "w2", Host: "h2", PID: 8, SeenAt: time.Now(), Breaker: "open",
			Throttle: &control.ThrottleStatus{Rate: 20, Limit: 8, InFlight: map[bus.Stream]int64{bus.Live: 1, bus.Resync: 2}},
			Lag:      map[bus.Stream]control.Lag{bus.Live: {P50: 0.5, P99: 2, Events: 100}}},
	} {
		if err := control.Heartbeat(e.ctx, e.store, w, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	code, body, _ := e.call("GET", "/api/v1/status", "", "")
	var st ops.ClusterStatus
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/status: %d %v %s", code, err, body)
	}
	if a := st.API; a.Breaker != "open" || !a.Throttled || a.Rate != 25 || a.Limit != 20 || a.InFlight != 6 || a.HeldUntil == nil || !a.HeldUntil.Equal(held) {
		t.Errorf("API: %+v", a)
	}
	for _, ss := range st.Streams {
		switch ss.Stream {
		case bus.Live:
			if ss.APIInFlight != 4 || ss.Lag == nil || *ss.Lag != (control.Lag{P50: 0.5, P99: 4.5, Events: 400}) {
				t.Errorf("live: API in flight %d, lag %+v", ss.APIInFlight, ss.Lag)
			}
		case bus.Resync:
			if ss.APIInFlight != 2 || ss.Lag != nil {
				t.Errorf("resync: API in flight %d, lag %+v", ss.APIInFlight, ss.Lag)
			}
		}
	}
	if len(st.Workers) != 2 || st.Workers[0].Throttle == nil || st.Workers[0].Lag[bus.Live].Events != 300 {
		t.Errorf("workers: %+v", st.Workers)
	}
	_, page, _ := e.call("GET", "/", "", "")
	for _, want := range []string{"500ms / 4.5s", "250ms / 4.5s", "25.0 calls/s; 6 call(s) in flight of a limit of 20",
		"held until " + when(held), "25.0/s, 3 of 12 in flight", "20.0/s, 3 of 8 in flight", `<span class="badge bad">open</span>`} {
		if !strings.Contains(page, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
}
