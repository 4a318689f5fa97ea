package httpsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/eventsync/eventsync/sink"
)

// recorded is one request the test API received.
type recorded struct {
	Method  string
	Path    string // escaped path
	Query   string
	Body    string
	Headers http.Header
}

// testAPI is an httptest server whose handler the test supplies; it records
// every request.
type testAPI struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newTestAPI(t *testing.T, handler http.HandlerFunc) *testAPI {
	t.Helper()
	api := &testAPI{}
	api.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		api.mu.Lock()
		api.reqs = append(api.reqs, recorded{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body), r.Header.Clone()})
		api.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body))) // for handlers that read it too
		handler(w, r)
	}))
	t.Cleanup(api.srv.Close)
	return api
}

func (a *testAPI) requests() []recorded {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]recorded(nil), a.reqs...)
}

// newSink builds a sink for YAML whose base_url is set to url.
func newSink(t *testing.T, url, yamlDoc string, opts ...Option) *Sink {
	t.Helper()
	cfg, err := ParseConfig([]byte(strings.ReplaceAll(yamlDoc, "BASE_URL", url)))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	s, err := New(cfg, append([]Option{WithLogger(nil)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

const collectionYAML = `
defaults:
  base_url: BASE_URL
  timeout: 2s
entities:
  listing: {collection: listings}
`

func TestDefaultRoutesFromCollection(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id":"r/1","name":"x"}`)
		case r.Method == http.MethodGet:
			_, _ = io.WriteString(w, `[{"id":"r/1"},{"id":42}]`)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = io.WriteString(w, `{}`)
		}
	})
	s := newSink(t, api.srv.URL, collectionYAML)
	ctx := context.Background()
	key := "k/1 ?#"
	rec := sink.Record{Entity: "listing", Key: key, Version: 3, Data: json.RawMessage(`{"title":"Sea <view>","price":12.50,"big":12345678901234567890}`)}

	id, err := s.Create(ctx, rec)
	if err != nil || id != "r/1" {
		t.Fatalf("Create = %q, %v; want r/1", id, err)
	}
	if err := s.Update(ctx, id, rec); err != nil {
		t.Fatalf("Update: %v", err)
	}
	ids, err := s.Lookup(ctx, "listing", key)
	if err != nil || len(ids) != 2 || ids[0] != "r/1" || ids[1] != "42" {
		t.Fatalf("Lookup = %q, %v; want [r/1 42]", ids, err)
	}
	if err := s.Delete(ctx, "listing", id); err != nil {
		t.Fatalf("Delete: %v", err)
	}

	reqs := api.requests()
	if len(reqs) != 4 {
		t.Fatalf("got %d requests, want 4", len(reqs))
	}
	// The data's members as published, in their order, numbers as written
	// and no HTML escaping, then the external id and the version.
	wantBody := `{"title":"Sea <view>","price":12.50,"big":12345678901234567890,"external_id":"k/1 ?#","version":3}`
	checks := []struct {
		method, path, query, body string
	}{
		{"POST", "/v1/listings", "", wantBody},
		{"PUT", "/v1/listings/r%2F1", "", wantBody},
		{"GET", "/v1/listings", "external_id=k%2F1+%3F%23", ""},
		{"DELETE", "/v1/listings/r%2F1", "", ""},
	}
	for i, c := range checks {
		got := reqs[i]
		if got.Method != c.method || got.Path != c.path || got.Query != c.query || got.Body != c.body {
			t.Errorf("request %d = %s %s?%s body %s\nwant %s %s?%s body %s", i, got.Method, got.Path, got.Query, got.Body, c.method, c.path, c.query, c.body)
		}
		if c.body != "" && got.Headers.Get("Content-Type") != "application/json" {
			t.Errorf("request %d Content-Type = %q", i, got.Headers.Get("Content-Type"))
		}
	}
}

func TestCustomTemplates(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			_, _ = io.WriteString(w, `{"data":{"id":901}}`)
		default:
			_, _ = io.WriteString(w, `{"results":[{"ref":"a"}]}`)
		}
	})
	s := newSink(t, api.srv.URL, `
defaults: {base_url: BASE_URL}
entities:
  host:
    create: {method: POST, path: "/api/hosts", body: '{"name": {{json .Data.name}}, "ref": {{json .Key}}, "raw": {{.DataJSON}}}'}
    update: {method: patch, path: "/api/hosts/{{.RemoteID | path}}?v={{.Version}}", body: '{"name": {{json .Data.name}}, "missing": {{json .Data.nope}}}'}
    delete: {method: POST, path: "/api/hosts/{{.RemoteID | path}}/archive"}
    lookup: {method: GET, path: "/api/hosts/search?ref={{.Key | query}}", ids: "results[].ref"}
    id_path: data.id
`)
	ctx := context.Background()
	rec := sink.Record{Entity: "host", Key: `he said "hi"`, Version: 9, Data: json.RawMessage(`{"name":"Ann"}`)}
	id, err := s.Create(ctx, rec)
	if err != nil || id != "901" {
		t.Fatalf("Create = %q, %v; want 901", id, err)
	}
	if err := s.Update(ctx, id, rec); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if err := s.Delete(ctx, "host", id); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	ids, err := s.Lookup(ctx, "host", "x")
	if err != nil || len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("Lookup = %q, %v", ids, err)
	}
	reqs := api.requests()
	want := []recorded{
		{Method: "POST", Path: "/api/hosts", Body: `{"name": "Ann", "ref": "he said \"hi\"", "raw": {"name":"Ann"}}`},
		{Method: "PATCH", Path: "/api/hosts/901", Query: "v=9", Body: `{"name": "Ann", "missing": null}`},
		{Method: "POST", Path: "/api/hosts/901/archive"},
		{Method: "GET", Path: "/api/hosts/search", Query: "ref=x"},
	}
	for i, w := range want {
		g := reqs[i]
		if g.Method != w.Method || g.Path != w.Path || g.Query != w.Query || g.Body != w.Body {
			t.Errorf("request %d = %s %s?%s %s\nwant %s %s?%s %s", i, g.Method, g.Path, g.Query, g.Body, w.Method, w.Path, w.Query, w.Body)
		}
	}
}

// statusAPI answers every request with status, header and body.
func statusAPI(t *testing.T, status int, header map[string]string, body string) *testAPI {
	return newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	})
}

// callOp runs op against s and returns its error.
func callOp(s *Sink, op string) error {
	ctx := context.Background()
	rec := sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: json.RawMessage(`{"a":1}`)}
	switch op {
	case "create":
		_, err := s.Create(ctx, rec)
		return err
	case "update":
		return s.Update(ctx, "r1", rec)
	case "delete":
		return s.Delete(ctx, "listing", "r1")
	case "lookup":
		_, err := s.Lookup(ctx, "listing", "k1")
		return err
	case "list":
		return s.List(ctx, "listing", func(sink.RemoteRecord) error { return nil })
	}
	panic("unknown op " + op)
}

func TestNotFoundOnUpdateAndDelete(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusNotFound, http.StatusGone} {
		for _, op := range []string{"update", "delete"} {
			t.Run(fmt.Sprintf("%s_%d", op, status), func(t *testing.T) {
				t.Parallel()
				api := statusAPI(t, status, nil, `{"error":"not found"}`)
				s := newSink(t, api.srv.URL, collectionYAML)
				err := callOp(s, op)
				if !errors.Is(err, sink.ErrNotFound) {
					t.Fatalf("err = %v; want sink.ErrNotFound", err)
				}
				if retry, _ := sink.Retryable(err); retry {
					t.Errorf("not-found must not be retryable")
				}
				var se *sink.Error
				if !errors.As(err, &se) || se.Op != op || se.Status != status {
					t.Errorf("sink.Error = %+v", se)
				}
			})
		}
	}
	// A 404 on create or lookup is a misconfigured route, not a gone record.
	for _, op := range []string{"create", "lookup"} {
		t.Run(op+"_404", func(t *testing.T) {
			t.Parallel()
			api := statusAPI(t, http.StatusNotFound, nil, "no such route")
			s := newSink(t, api.srv.URL, collectionYAML)
			err := callOp(s, op)
			if errors.Is(err, sink.ErrNotFound) {
				t.Fatalf("%s 404 reported as ErrNotFound", op)
			}
			if retry, _ := sink.Retryable(err); retry {
				t.Errorf("%s 404 must be permanent", op)
			}
		})
	}
}

func TestRetryableStatuses(t *testing.T) {
	t.Parallel()
	date := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		status     int
		retryAfter string
		want       time.Duration
	}{
		{http.StatusRequestTimeout, "", 0},
		{http.StatusTooManyRequests, "7", 7 * time.Second},
		{http.StatusTooManyRequests, date.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{http.StatusTooManyRequests, "86400", MaxRetryAfter},
		{http.StatusInternalServerError, "", 0},
		{http.StatusBadGateway, "", 0},
		{http.StatusServiceUnavailable, "120", 2 * time.Minute},
		{http.StatusGatewayTimeout, "soon", 0},
	}
	for _, c := range cases {
		for _, op := range []string{"create", "update", "delete", "lookup", "list"} {
			t.Run(fmt.Sprintf("%d_%s_%s", c.status, c.retryAfter, op), func(t *testing.T) {
				t.Parallel()
				api := statusAPI(t, c.status, map[string]string{"Retry-After": c.retryAfter}, "busy")
				s := newSink(t, api.srv.URL, collectionYAML)
				s.now = func() time.Time { return date }
				err := callOp(s, op)
				retry, after := sink.Retryable(err)
				if !retry || after != c.want {
					t.Fatalf("Retryable(%v) = %v, %v; want true, %v", err, retry, after, c.want)
				}
				var se *sink.Error
				if !errors.As(err, &se) || se.Status != c.status || se.Op != op {
					t.Errorf("sink.Error = %+v", se)
				}
			})
		}
	}
}

func TestPermanentStatusesCarryBoundedExcerpt(t *testing.T) {
	t.Parallel()
	// 5 bytes of ASCII then 3-byte runes: a cut at 16 bytes falls inside one.
	long := "error" + strings.Repeat("€", 200)
	for _, status := range []int{400, 401, 403, 409, 422} {
		for _, op := range []string{"create", "update", "delete", "lookup"} {
			t.Run(fmt.Sprintf("%d_%s", status, op), func(t *testing.T) {
				t.Parallel()
				api := statusAPI(t, status, map[string]string{"Retry-After": "5"}, long)
				s := newSink(t, api.srv.URL, strings.Replace(collectionYAML, "timeout: 2s", "timeout: 2s\n  max_body_excerpt: 16", 1))
				err := callOp(s, op)
				if retry, _ := sink.Retryable(err); retry {
					t.Fatalf("status %d retryable: %v", status, err)
				}
				var se *sink.Error
				if !errors.As(err, &se) {
					t.Fatalf("err %T is not *sink.Error", err)
				}
				if se.Status != status || se.RetryAfter != 0 || errors.Is(err, sink.ErrNotFound) {
					t.Errorf("sink.Error = %+v", se)
				}
				if len(se.Body) > 16 || !utf8.ValidString(se.Body) || !strings.HasPrefix(se.Body, "error€") {
					t.Errorf("excerpt %q (%d bytes) not a valid ≤16-byte prefix", se.Body, len(se.Body))
				}
			})
		}
	}
}

func TestTimeoutIsRetryable(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; the client gives up
	})
	s := newSink(t, api.srv.URL, strings.Replace(collectionYAML, "timeout: 2s", "timeout: 100ms", 1))
	err := callOp(s, "create")
	retry, _ := sink.Retryable(err)
	var se *sink.Error
	if !retry || !errors.As(err, &se) || se.Status != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v; want retryable transport error wrapping DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "100ms timeout") {
		t.Errorf("error %q does not name the timeout", err)
	}
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	s := newSink(t, "http://"+addr, collectionYAML)
	for _, op := range []string{"create", "update", "delete", "lookup", "list"} {
		err := callOp(s, op)
		retry, _ := sink.Retryable(err)
		var se *sink.Error
		if !retry || !errors.As(err, &se) || se.Status != 0 || se.Op != op {
			t.Fatalf("%s: err = %v; want retryable transport error", op, err)
		}
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s: error %q does not say the connection was refused", op, err)
		}
	}
}

func TestIDPathVariants(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path, body, want, wantErr string
	}{
		{path: "id", body: `{"id":"abc"}`, want: "abc"},
		{path: "id", body: `{"id":42}`, want: "42"},
		{path: "id", body: `{"id":-7}`, want: "-7"},
		{path: "id", body: `{"id":1e3}`, want: "1000"},
		{path: "id", body: `{"id":12345678901234567890123}`, want: "12345678901234567890123"},
		{path: "data.id", body: `{"data":{"id":"x1"}}`, want: "x1"},
		{path: "[0].id", body: `[{"id":5},{"id":6}]`, want: "5"},
		{path: "items[1].ref", body: `{"items":[{"ref":"a"},{"ref":"b"}]}`, want: "b"},
		{path: "id", body: `{"id":1.5}`, wantErr: `create response has no string or number at id path "id": got {"id":1.5}`},
		{path: "id", body: `{"id":""}`, wantErr: `no string or number at id path "id"`},
		{path: "data.id", body: `{"id":"x"}`, wantErr: `create response has no string or number at id path "data.id": got {"id":"x"}`},
		{path: "[3].id", body: `[{"id":5}]`, wantErr: `at id path "[3].id"`},
		{path: "id", body: `{"id":{"nested":1}}`, wantErr: `no string or number`},
		{path: "id", body: `<html>oops</html>`, wantErr: `create response is not valid JSON`},
		{path: "id", body: ``, wantErr: `create response is empty body`},
		{path: "id", body: `{"id":1} {"id":2}`, wantErr: `trailing data`},
	}
	for _, c := range cases {
		p, err := parsePath(c.path)
		if err != nil {
			t.Fatalf("parsePath(%q): %v", c.path, err)
		}
		got, err := extractID([]byte(c.body), p, "create", 512)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("extractID(%s, %q) = %q, %v; want error containing %q", c.body, c.path, got, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("extractID(%s, %q) = %q, %v; want %q", c.body, c.path, got, err, c.want)
		}
	}
	for _, bad := range []string{"", ".", "a..b", "a.[0]", "a[x]", "a]", "a[0", "[99999999]"} {
		if _, err := parsePath(bad); err == nil {
			t.Errorf("parsePath(%q) accepted", bad)
		}
	}
}

func TestCreateWithUnusableResponseIsPermanent(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, http.StatusCreated, nil, `{"data":{"uuid":"x"}}`)
	s := newSink(t, api.srv.URL, strings.Replace(collectionYAML, "{collection: listings}", "{collection: listings, id_path: data.id}", 1))
	err := callOp(s, "create")
	if retry, _ := sink.Retryable(err); retry {
		t.Fatalf("unparsable create response must not be retried blindly: %v", err)
	}
	for _, want := range []string{`id path "data.id"`, `{"data":{"uuid":"x"}}`, "sink.entities.listing.id_path"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestHeadersFromEnvironment(t *testing.T) {
	// t.Setenv forbids t.Parallel.
	t.Setenv("HTTPSINK_TEST_TOKEN", "s3cret")
	api := statusAPI(t, http.StatusOK, nil, `[]`)
	s := newSink(t, api.srv.URL, `
defaults:
  base_url: BASE_URL
  headers:
    Authorization: "Bearer ${HTTPSINK_TEST_TOKEN}"
    X-Tenant: acme
entities:
  listing:
    collection: listings
    headers: {X-Tenant: "${HTTPSINK_TEST_TOKEN}-tenant"}
`)
	if _, err := s.Lookup(context.Background(), "listing", "k"); err != nil {
		t.Fatal(err)
	}
	h := api.requests()[0].Headers
	if h.Get("Authorization") != "Bearer s3cret" || h.Get("X-Tenant") != "s3cret-tenant" || h.Get("Accept") != "application/json" {
		t.Errorf("headers = %v", h)
	}
}

func TestMissingEnvironmentVariableIsStartupError(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
defaults:
  base_url: http://127.0.0.1:1
  headers: {Authorization: "Bearer ${HTTPSINK_TEST_SURELY_UNSET}"}
entities: {listing: {collection: listings}}
`))
	if err != nil {
		t.Fatalf("ParseConfig must accept the reference (it is resolved at New): %v", err)
	}
	_, err = New(cfg)
	if err == nil {
		t.Fatal("New accepted a header referencing an unset variable")
	}
	for _, want := range []string{"sink.defaults.headers.Authorization", "HTTPSINK_TEST_SURELY_UNSET", "not set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestListPagination(t *testing.T) {
	t.Parallel()
	for _, total := range []int{0, 1, 99, 100, 250} {
		t.Run(strconv.Itoa(total), func(t *testing.T) {
			t.Parallel()
			api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
				page, _ := strconv.Atoi(r.URL.Query().Get("page"))
				per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
				data := []map[string]any{}
				for i := (page - 1) * per; i < page*per && i < total; i++ {
					rec := map[string]any{"id": i + 1000, "name": fmt.Sprintf("n%d", i)}
					if i%2 == 0 {
						rec["external_id"] = fmt.Sprintf("k%d", i)
					}
					data = append(data, rec)
				}
				_ = json.NewEncoder(w).Encode(map[string]any{"data": data, "page": page, "per_page": per, "total": total})
			})
			s := newSink(t, api.srv.URL, collectionYAML)
			var got []sink.RemoteRecord
			err := s.List(context.Background(), "listing", func(r sink.RemoteRecord) error {
				got = append(got, r)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != total {
				t.Fatalf("listed %d records, want %d", len(got), total)
			}
			for i, r := range got {
				wantKey := ""
				if i%2 == 0 {
					wantKey = fmt.Sprintf("k%d", i)
				}
				if r.RemoteID != strconv.Itoa(i+1000) || r.Key != wantKey || r.Fields["name"] != fmt.Sprintf("n%d", i) {
					t.Fatalf("record %d = %+v", i, r)
				}
			}
			// Pages are fetched until a short page: total/100 full pages + 1.
			if n := len(api.requests()); n != total/100+1 {
				t.Errorf("fetched %d pages, want %d", n, total/100+1)
			}
		})
	}
}

func TestListBareArrayAndCallbackError(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
		o := r.URL.Query().Get("offset")
		_, _ = fmt.Fprintf(w, `[{"uid":"a%s","ext":{"key":"k1"}},{"uid":"b%s","ext":{"key":"k2"}}]`, o, o)
	})
	s := newSink(t, api.srv.URL, `
defaults: {base_url: BASE_URL}
entities:
  listing:
    collection: listings
    list: {path: "/v1/listings?offset={{.Page}}", items: "[]", id: uid, external_id: ext.key, per_page: 2, first_page: 0}
`)
	stop := errors.New("stop here")
	var keys []string
	err := s.List(context.Background(), "listing", func(r sink.RemoteRecord) error {
		keys = append(keys, r.RemoteID+"="+r.Key)
		if len(keys) == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("List err = %v; want the callback's error", err)
	}
	if strings.Join(keys, ",") != "a0=k1,b0=k2,a1=k1" {
		t.Errorf("keys = %v", keys)
	}
	if q := api.requests()[0].Query; q != "offset=0" {
		t.Errorf("first page query = %q, want offset=0", q)
	}
}

func TestListMalformedPage(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, http.StatusOK, nil, `{"data":{"not":"an array"}}`)
	s := newSink(t, api.srv.URL, collectionYAML)
	err := callOp(s, "list")
	if err == nil || !strings.Contains(err.Error(), `no array at items path "data"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestObserverSeesEveryCall(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, http.StatusServiceUnavailable, nil, "down")
	type call struct {
		op, entity string
		status     int
		err        bool
	}
	var mu sync.Mutex
	var calls []call
	s := newSink(t, api.srv.URL, collectionYAML, WithObserver(func(op, entity string, status int, d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if d < 0 {
			t.Errorf("negative duration %v", d)
		}
		calls = append(calls, call{op, entity, status, err != nil})
	}))
	_ = callOp(s, "update")
	_ = callOp(s, "delete")
	want := []call{{"update", "listing", 503, true}, {"delete", "listing", 503, true}}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("observer calls = %v, want %v", calls, want)
	}
}

func TestUnknownEntityAndBadDataArePermanent(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, http.StatusOK, nil, `{"id":"x"}`)
	s := newSink(t, api.srv.URL, collectionYAML)
	_, err := s.Create(context.Background(), sink.Record{Entity: "booking", Key: "k", Version: 1, Data: json.RawMessage(`{}`)})
	if retry, _ := sink.Retryable(err); retry || !strings.Contains(fmt.Sprint(err), `no sink configured for entity "booking"`) {
		t.Errorf("unknown entity: %v", err)
	}
	_, err = s.Create(context.Background(), sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`[1,2]`)})
	if retry, _ := sink.Retryable(err); retry || err == nil {
		t.Errorf("non-object data: %v", err)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	cfg := Config{Defaults: Defaults{BaseURL: "http://127.0.0.1:1"}, EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings"}}}
	if _, err := New(cfg, WithHTTPClient(nil)); err == nil {
		t.Error("WithHTTPClient(nil) accepted")
	}
	if _, err := New(cfg, WithObserver(nil)); err == nil {
		t.Error("WithObserver(nil) accepted")
	}
	s, err := New(cfg, WithHTTPClient(&http.Client{}))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := s.Entities(); len(got) != 1 || got[0] != "listing" {
		t.Errorf("Entities() = %v", got)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                        0,
		"0":                       0,
		" 3 ":                     3 * time.Second,
		"600":                     10 * time.Minute,
		"601":                     MaxRetryAfter,
		"99999999999999999999999": MaxRetryAfter,
		"-5":                      0,
		"1.5":                     0,
		now.Add(-time.Hour).Format(http.TimeFormat):     0,
		now.Add(30 * time.Second).Format(time.RFC850):   30 * time.Second,
		now.Add(24 * time.Hour).Format(http.TimeFormat): MaxRetryAfter,
	}
	for in, want := range cases {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestListStopsWhenTheAPIIgnoresThePage(t *testing.T) {
	t.Parallel()
	api := statusAPI(t, http.StatusOK, nil, `{"data":[{"id":1},{"id":2}]}`)
	s := newSink(t, api.srv.URL, strings.Replace(collectionYAML, "{collection: listings}", "{collection: listings, list: {path: \"/v1/listings?page={{.Page}}\", per_page: 2}}", 1))
	n := 0
	err := s.List(context.Background(), "listing", func(sink.RemoteRecord) error { n++; return nil })
	if err == nil || !strings.Contains(err.Error(), "same record") {
		t.Fatalf("List err = %v; want the repeated-page error", err)
	}
	if n != 2 || len(api.requests()) != 2 {
		t.Errorf("listed %d records in %d requests; want 2 in 2", n, len(api.requests()))
	}
}
