package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/eventsync/eventsync/sink"
)

// roundTrip is an in-memory API: fn answers each request, which is kept.
type roundTrip struct {
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
	fn   func(r *http.Request) (int, string)
}

func (rt *roundTrip) RoundTrip(r *http.Request) (*http.Response, error) {
	var b []byte
	if r.Body != nil {
		b, _ = io.ReadAll(r.Body)
	}
	rt.mu.Lock()
	rt.reqs = append(rt.reqs, r)
	rt.body = append(rt.body, b)
	rt.mu.Unlock()
	status, body := rt.fn(r)
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

func newMemSink(t testing.TB, cfg Config, fn func(*http.Request) (int, string)) (*Sink, *roundTrip) {
	t.Helper()
	rt := &roundTrip{fn: fn}
	s, err := New(cfg, WithHTTPClient(&http.Client{Transport: rt}), WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return s, rt
}

// TestHeaderFromFile: ${NAME} in a header reads NAME_FILE when NAME is
// unset (a mounted Kubernetes secret), without the file's final line
// break; setting both is an error naming them.
func TestHeaderFromFile(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secret, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("EVENTSYNC_TEST_HDR_FILE", secret)
	cfg := Config{
		Defaults:      Defaults{BaseURL: "http://api.test", Headers: map[string]string{"Authorization": "Bearer ${EVENTSYNC_TEST_HDR}"}},
		EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings"}},
	}
	s, rt := newMemSink(t, cfg, func(*http.Request) (int, string) { return 201, `{"id":"r1"}` })
	if _, err := s.Create(context.Background(), sink.Record{Entity: "listing", Key: "k", Version: 1, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if got := rt.reqs[0].Header.Get("Authorization"); got != "Bearer tok-from-file" {
		t.Fatalf("Authorization = %q", got)
	}
	t.Setenv("EVENTSYNC_TEST_HDR", "direct")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "both EVENTSYNC_TEST_HDR and EVENTSYNC_TEST_HDR_FILE") {
		t.Fatalf("both set: %v", err)
	}
}

// FuzzHeaderExpansion: any header value with ${NAME} references, any
// variable value: the expansion is the value with each well-formed
// reference replaced, a malformed one or an unset variable is an error
// naming the header, and no accepted value carries a line break or NUL.
func FuzzHeaderExpansion(f *testing.F) {
	f.Add("Bearer ${TOKEN}", "abc", true)
	f.Add("${A}${TOKEN}x${TOKEN}", "v", true)
	f.Add("${ TOKEN}", "", true)
	f.Add("$${TOKEN}}", "x\r\ny", true)
	f.Add("${TOKEN", "x", false)
	f.Add("${1X}", "x", true)
	f.Fuzz(func(t *testing.T, value, env string, set bool) {
		lookup := func(name string) (string, bool) {
			if name == "TOKEN" && set {
				return env, true
			}
			return "", false
		}
		h, errs := checkHeaders("sink.defaults.headers", map[string]string{"X-Test": value}, lookup)
		for _, err := range errs {
			if !strings.Contains(err.Error(), "sink.defaults.headers.X-Test") {
				t.Fatalf("error does not name the header: %v", err)
			}
		}
		if len(errs) > 0 {
			return
		}
		got := h.Get("X-Test")
		if strings.ContainsAny(got, "\r\n\x00") {
			t.Fatalf("accepted %q", got)
		}
		want := envRefPattern.ReplaceAllStringFunc(value, func(ref string) string {
			if ref != "${TOKEN}" || !set {
				t.Fatalf("%q expanded though %s is unset", value, ref)
			}
			return env
		})
		if strings.Contains(envRefPattern.ReplaceAllString(value, ""), "${") {
			t.Fatalf("%q has a malformed reference but was accepted", value)
		}
		if got != want && got != strings.TrimSpace(want) { // net/http's Header.Set keeps the value as is
			t.Fatalf("%q expanded to %q, want %q", value, got, want)
		}
	})
}

// templateConfig reads .Data in paths and bodies with every template
// function, next to the default spliced body of a collection.
func templateConfig() Config {
	return Config{
		Defaults: Defaults{BaseURL: "http://api.test"},
		EntityConfigs: map[string]EntityConfig{
			"listing": {Collection: "listings"},
			"user": {
				Create: &Request{Method: "POST", Path: "/v2/people?ref={{.Key | query}}&name={{.Data.name | print | query}}",
					Body: `{"external_ref": {{json .Key}}, "name": {{json .Data.name}}, "tags": {{json .Data.tags}}, "all": {{.DataJSON}}, "v": {{.Version}}}`},
				Update: &Request{Method: "PATCH", Path: "/v2/people/{{.RemoteID | path}}/{{.Data.nested.id | print | path}}",
					Body: `{"n": {{json .Data.nested}}, "m": {{json (index .Data "odd key")}}}`},
				Delete: &Request{Method: "DELETE", Path: "/v2/people/{{.RemoteID | path}}"},
				IDPath: "data.id",
			},
		},
	}
}

// FuzzTemplatesWithEventData runs the sink's templates over arbitrary
// event data, keys and remote ids. It must never panic; a call that goes
// out has a JSON body and a URL that carries the key and remote id
// escaped (they read back as they were); a call that does not is a
// permanent local error, never one that blames the API.
func FuzzTemplatesWithEventData(f *testing.F) {
	f.Add("k1", "r1", int64(1), []byte(`{"name":"a","tags":["x"],"nested":{"id":7},"odd key":null}`))
	f.Add("a/b?c=d#e f", "r/../1", int64(9), []byte(`{"name":"\u2028</script>","nested":{"id":"../x"}}`))
	f.Add("k", "r", int64(-1), []byte(`{"name":1e400}`))
	f.Add("k", "r", int64(2), []byte(`[1,2]`))
	f.Add("k", "r", int64(2), []byte(`{"name":"a","name":"b","external_id":"evil","version":99}`))
	f.Add("", "", int64(0), []byte(`{"\ud800":"\xff"}`))
	cfg := templateConfig()
	f.Fuzz(func(t *testing.T, key, remoteID string, version int64, data []byte) {
		s, rt := newMemSink(t, cfg, func(r *http.Request) (int, string) {
			if r.URL.Path == "/v1/listings" {
				return 201, `{"id":"r1"}`
			}
			return 201, `{"data":{"id":"r2"}}`
		})
		ctx := context.Background()
		for _, entity := range []string{"listing", "user"} {
			rec := sink.Record{Entity: entity, Key: key, Version: version, Data: data}
			before := len(rt.reqs)
			_, errCreate := s.Create(ctx, rec)
			errUpdate := s.Update(ctx, remoteID, rec)
			for _, err := range []error{errCreate, errUpdate} {
				var se *sink.Error
				if err != nil && (!errors.As(err, &se) || se.Retryable || se.Status != 0) {
					t.Fatalf("%s: a template or data error must be permanent and local: %#v", entity, err)
				}
			}
			for i := before; i < len(rt.reqs); i++ {
				r, body := rt.reqs[i], rt.body[i]
				if !json.Valid(body) {
					t.Fatalf("%s %s sent invalid JSON %q", r.Method, r.URL, body)
				}
				if entity == "user" && r.Method == "POST" && r.URL.Query().Get("ref") != key {
					t.Fatalf("ref %q reads back as %q", key, r.URL.Query().Get("ref"))
				}
				if r.Method == "PATCH" || r.Method == "PUT" {
					seg := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")[2]
					if got, err := url.PathUnescape(seg); err != nil || got != remoteID {
						t.Fatalf("remote id %q reads back as %q (%v) in %s", remoteID, got, err, r.URL.EscapedPath())
					}
				}
				if entity == "listing" && r.Method == "POST" && utf8.ValidString(key) { // event keys are JSON strings: valid UTF-8
					var m map[string]any
					dec := json.NewDecoder(bytes.NewReader(body))
					dec.UseNumber()
					if err := dec.Decode(&m); err != nil || m["external_id"] != key || m["version"] != json.Number(strconv.FormatInt(version, 10)) {
						t.Fatalf("default body %q: external_id/version not %q/%d (%v)", body, key, version, err)
					}
				}
			}
		}
	})
}

// FuzzListPaging lists from an API whose pages are arbitrary bodies (and
// which may ignore the page parameter): List never panics, stops (at the
// first short or empty page, or with an error when the API repeats a
// page), and every record it yields has the id its item holds.
func FuzzListPaging(f *testing.F) {
	f.Add([]byte(`{"data":[{"id":1},{"id":"b"}]}`+"\n--\n"+`{"data":[{"id":3}]}`), uint8(2), false)
	f.Add([]byte(`{"data":[{"id":1},{"id":2}]}`), uint8(2), true)
	f.Add([]byte(`{"data":[{"id":1}, {"x":2}]}`), uint8(1), false)
	f.Add([]byte(`{"data":{"id":1}}`+"\n--\n"+`[]`+"\n--\n"+`{"data":null}`), uint8(1), false)
	f.Add([]byte(`{"data":[{"id":1e400},{"id":-0},{"id":true}]}`), uint8(3), false)
	f.Fuzz(func(t *testing.T, raw []byte, perPage uint8, ignorePage bool) {
		pages := bytes.Split(raw, []byte("\n--\n"))
		if len(pages) > 20 {
			pages = pages[:20]
		}
		per := int(perPage%5) + 1
		cfg := Config{Defaults: Defaults{BaseURL: "http://api.test"},
			EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings", List: &ListRequest{
				Path: "/v1/listings?page={{.Page}}&per_page={{.PerPage}}", PerPage: per}}}}
		var calls int
		s, _ := newMemSink(t, cfg, func(r *http.Request) (int, string) {
			calls++
			n, _ := strconv.Atoi(r.URL.Query().Get("page"))
			if ignorePage {
				n = 1
			}
			if n < 1 || n > len(pages) {
				return 200, `{"data":[]}`
			}
			return 200, string(pages[n-1])
		})
		var got []sink.RemoteRecord
		err := s.List(context.Background(), "listing", func(r sink.RemoteRecord) error {
			if r.RemoteID == "" {
				t.Fatalf("record without an id: %+v", r)
			}
			got = append(got, r)
			return nil
		})
		limit := len(pages) + 1
		if ignorePage {
			limit = 2
		}
		if calls > limit {
			t.Fatalf("%d calls for %d pages (ignore page: %v): List does not stop", calls, len(pages), ignorePage)
		}
		if err == nil && len(got) > calls*per {
			t.Fatalf("%d records from %d pages of %d", len(got), calls, per)
		}
	})
}
