package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"text/template"

	"github.com/eventsync/eventsync/sink"
)

// decodedBody is the default body as it was built before spliceBody: the
// data decoded into a map, the two members set, encoded again.
func decodedBody(t testing.TB, data []byte, key string, version int64) ([]byte, bool) {
	t.Helper()
	m := map[string]any{}
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && string(trimmed) != "null" {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return nil, false
		}
	}
	body, err := defaultShape.mapBody(m, key, version)
	if err != nil {
		t.Fatalf("mapBody: %v", err)
	}
	return body, true
}

// spliceBody is the default body of the default shape; see
// bodyShape.splice.
func spliceBody(data []byte, key string, version int64) ([]byte, bool) {
	return defaultShape.splice(data, key, version)
}

// sameJSON reports whether a and b decode to the same value, numbers
// compared as written.
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	decode := func(b []byte) any {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		return v
	}
	return reflect.DeepEqual(decode(a), decode(b))
}

// plainJSON reports whether b is one JSON document without repeated
// member names, invalid UTF-8 or surrogate escapes, so that decoding it
// (as sameJSON does) loses nothing.
func plainJSON(b []byte) bool {
	return (&walker{b: b, strict: true}).value(0, 1) == len(b)
}

// The default body sent for every kind of data: what the API receives
// means what the decoded-map body meant, member for member; data that
// already has an external_id or version gets them replaced exactly as
// before, and data the splice cannot vouch for still takes the map path.
func TestDefaultBodyAsBefore(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"id":"r1"}`) })
	s := newSink(t, api.srv.URL, collectionYAML)
	const key = `k"1/é<`
	cases := []struct {
		name, data string
		want       string // exact body; empty: only the same meaning as the map path
		spliced    bool   // whether spliceBody takes it
	}{
		{"plain", `{"title":"Sea view","n":1.50}`, `{"title":"Sea view","n":1.50,"external_id":"k\"1/é<","version":9}`, true},
		{"empty object", ` { } `, `{"external_id":"k\"1/é<","version":9}`, true},
		{"no data", ``, `{"external_id":"k\"1/é<","version":9}`, true},
		{"null data", `null`, `{"external_id":"k\"1/é<","version":9}`, true},
		{"whitespace and nesting", "{\n  \"a\": [1, {\"b\": null}],\n  \"c\": {\"d\": true}\n}", "", true},
		{"external_id replaced", `{"external_id":"theirs","title":"x"}`, `{"title":"x","external_id":"k\"1/é<","version":9}`, true},
		{"version replaced", `{"title":"x","version":"v2","z":0}`, `{"title":"x","z":0,"external_id":"k\"1/é<","version":9}`, true},
		{"both replaced", `{"version":1,"a":1,"external_id":2}`, `{"a":1,"external_id":"k\"1/é<","version":9}`, true},
		{"both, adjacent, last", `{"a":1,"version":1,"external_id":2}`, `{"a":1,"external_id":"k\"1/é<","version":9}`, true},
		{"only the two", `{"external_id":"x","version":2}`, `{"external_id":"k\"1/é<","version":9}`, true},
		{"nested external_id kept", `{"owner":{"external_id":"o1","version":3}}`, `{"owner":{"external_id":"o1","version":3},"external_id":"k\"1/é<","version":9}`, true},
		{"escapes", `{"t":"a\"b\\c\u00e9\n"}`, "", true},
		{"repeated name", `{"a":1,"b":2,"a":3}`, "", false},
		{"repeated nested name", `{"x":{"a":1,"a":2}}`, "", false},
		{"repeated external_id", `{"external_id":1,"external_id":2}`, "", false},
		{"escaped name", `{"external\u005fid":"theirs"}`, "", false},
		{"surrogate escape", `{"s":"\ud83d\ude00"}`, "", false},
		{"lone surrogate", `{"s":"\ud800"}`, "", false},
		{"invalid UTF-8", "{\"s\":\"\xff\"}", "", false},
		{"trailing data", `{"a":1} {"b":2}`, "", false},
	}
	for i, c := range cases {
		rec := sink.Record{Entity: "listing", Key: key, Version: 9, Data: json.RawMessage(c.data)}
		if _, err := s.Create(context.Background(), rec); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body := []byte(api.requests()[i].Body)
		want, ok := decodedBody(t, []byte(c.data), key, 9)
		if !ok {
			t.Fatalf("%s: the map path refuses the data", c.name)
		}
		if c.want != "" && string(body) != c.want {
			t.Errorf("%s: body %s, want %s", c.name, body, c.want)
		}
		if !plainJSON(body) || !sameJSON(t, body, want) {
			t.Errorf("%s: body %s does not mean %s", c.name, body, want)
		}
		if _, spliced := spliceBody([]byte(c.data), key, 9); spliced != c.spliced && c.data != "" && c.data != "null" {
			t.Errorf("%s: spliced = %v, want %v", c.name, spliced, c.spliced)
		}
		if !c.spliced && string(body) != string(want) {
			t.Errorf("%s: body %s, want the map path's %s", c.name, body, want)
		}
	}
}

// Data that is no JSON object is refused as before, whichever the body.
func TestRecordDataRefusesNonObjects(t *testing.T) {
	t.Parallel()
	compileYAML := func(doc string) map[string]*entity {
		cfg, err := ParseConfig([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		ents, err := compile(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ents
	}
	ents := compileYAML(`
defaults: {base_url: "http://127.0.0.1:1"}
entities: {listing: {collection: listings}}
`)
	customEnts := compileYAML(`
defaults: {base_url: "http://127.0.0.1:1"}
entities:
  listing:
    collection: listings
    create: {method: POST, path: "/v1/listings", body: '{"k": {{json .Key}}}'}
`)
	if customEnts["listing"].create.usesData {
		t.Fatal("a body without .Data counts as using it")
	}
	for _, op := range []*operation{ents["listing"].create, customEnts["listing"].create} {
		for _, data := range []string{`[1]`, `"s"`, `1`, `{"a":`, `{"a":1,}`, "\u00a0{}"} {
			_, _, err := recordData(op, sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(data)})
			var serr *sink.Error
			if !errors.As(err, &serr) || !strings.Contains(err.Error(), "is not a JSON object") {
				t.Errorf("body %v, data %s: %v", op.body != nil, data, err)
			}
		}
		// encoding/json reads the first value only, so trailing data is
		// tolerated, as it always was.
		if _, _, err := recordData(op, sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{"a":1} x`)}); err != nil {
			t.Errorf("trailing data: %v", err)
		}
	}
}

// Templates that read .Data still get it, decoded; the others do not pay
// for it.
func TestUsesData(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		`/v1/listings`:                                        false,
		`/v1/listings/{{.RemoteID | path}}`:                   false,
		`/v1/{{.Entity}}?k={{.Key | query}}`:                  false,
		`/v1/{{.Data.tenant}}/listings`:                       true,
		`{"d": {{.DataJSON}}}`:                                true,
		`{{json .}}`:                                          true,
		`{{with .Key}}{{.}}{{end}}`:                           true,
		`{{$.Data.x}}`:                                        true,
		`{{$}}`:                                               true,
		`{{range $k, $v := .Data}}{{$k}}{{end}}`:              true,
		`{{if .Key}}{{else}}{{index .Data "x"}}{{end}}`:       true,
		`{{define "d"}}{{.Data}}{{end}}{{template "d" .Key}}`: true,
		`{{$v := .Version}}{{$v}}`:                            false,
	}
	for src, want := range cases {
		tmpl := template.Must(template.New("t").Funcs(templateFuncs).Parse(src))
		if got := usesData(tmpl); got != want {
			t.Errorf("usesData(%s) = %v, want %v", src, got, want)
		}
	}
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"id":"r1"}`) })
	s := newSink(t, api.srv.URL, `
defaults: {base_url: BASE_URL}
entities:
  listing:
    collection: listings
    create: {method: POST, path: "/v1/{{.Data.tenant}}/listings", body: '{"all": {{.DataJSON}}, "t": {{json .Data.title}}}'}
`)
	rec := sink.Record{Entity: "listing", Key: "k", Version: 1, Data: json.RawMessage(`{"tenant":"acme","title":"Loft"}`)}
	if _, err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if r := api.requests()[0]; r.Path != "/v1/acme/listings" || r.Body != `{"all": {"tenant":"acme","title":"Loft"}, "t": "Loft"}` {
		t.Fatalf("got %s %s", r.Path, r.Body)
	}
}

// The id scan reads what the decoded document would have given.
func TestScanIDCases(t *testing.T) {
	t.Parallel()
	cases := []struct{ body, path, want string }{
		{`{"id":"a","id":"b"}`, "id", "b"},
		{`{"i\u0064":"esc"}`, "id", "esc"},
		{`{"id":"x","data":{"id":7}}`, "data.id", "7"},
		{`[{"id":1},{"id":2}]`, "[1].id", "2"},
		{`{"id":"\u00e9\n"}`, "id", "é\n"},
		{`{"id":1.0}`, "id", "1"},
		{`{"id":12345678901234567890123}`, "id", "12345678901234567890123"},
		{` {"id" : "sp" } `, "id", "sp"},
	}
	for _, c := range cases {
		p, err := parsePath(c.path)
		if err != nil {
			t.Fatal(err)
		}
		id, found, ok := scanID([]byte(c.body), p)
		if !ok || !found || id != c.want {
			t.Errorf("scanID(%s, %s) = %q, %v, %v; want %q", c.body, c.path, id, found, ok, c.want)
		}
	}
	p, _ := parsePath("data[].id")
	ids, all, ok := scanIDs([]byte(`{"data":[{"id":1},{"x":2},"s",{"id":"b"}],"data":[{"id":"c"},{"id":3}]}`), p)
	if !ok || !all || !slices.Equal(ids, []string{"c", "3"}) {
		t.Fatalf("scanIDs = %q, %v, %v", ids, all, ok)
	}
	for _, bad := range []string{``, `{"id":1`, `{"id":1} x`, `{"id":01}`, `{"id":"\x"}`, strings.Repeat("[", walkMaxDepth+2)} {
		if _, _, ok := scanID([]byte(bad), p); ok {
			t.Errorf("scanID accepted %q", bad)
		}
	}
}
