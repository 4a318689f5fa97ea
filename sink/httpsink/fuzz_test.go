package httpsink

import (
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"
	"unicode/utf8"
)

// FuzzExtractID feeds arbitrary response bodies and paths to every response
// parser: they must never panic, and errors must carry a bounded, valid
// UTF-8 excerpt. Where the id scan vouches for a body, it must find the ids
// that decoding the whole body finds, and fail where that fails.
func FuzzExtractID(f *testing.F) {
	seeds := [][2]string{
		{`{"id":"abc"}`, "id"},
		{`{"id":42}`, "id"},
		{`{"data":{"id":"x"}}`, "data.id"},
		{`[{"id":5}]`, "[0].id"},
		{`[{"id":5},{"id":"b"}]`, "[].id"},
		{`{"data":[{"id":1,"external_id":"k"}],"page":1}`, "data"},
		{`{"id":1e308}`, "id"},
		{`{"id":-0.0}`, "id"},
		{`{"a":[[[1]]]}`, "a[0][0][0]"},
		{"\xff\xfe{", "id"},
		{``, "[]"},
		{`{"id":"a","id":7}`, "id"}, {`{"i\u0064":"x","id":"y"}`, "id"},
		{`{"data":{"id":"x"},"data":{"id":2}}`, "data.id"}, {`[{"id":5},{"x":1},{"id":"b"}]`, "[].id"},
		{`{"data":[[1,2],[3]]}`, "data[][]"}, {`{"ids":[1,"b",2.0]}`, "ids"}, {`{"ids":[1,{}]}`, "ids"},
		{`{"id":""}`, "id"}, {"{\"id\":\"\xff\"}", "id"}, {`{"id":null}`, "id"}, {` [] `, "[]"},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), s[1])
	}
	f.Fuzz(func(t *testing.T, body []byte, rawPath string) {
		p, err := parsePath(rawPath)
		if err != nil {
			return
		}
		const n = 64
		check := func(err error) {
			if err != nil && !utf8.ValidString(err.Error()) {
				t.Fatalf("error is not valid UTF-8: %q", err)
			}
		}
		id, err := extractID(body, p, "create", n)
		check(err)
		if err == nil && id == "" {
			t.Fatal("extractID returned an empty id without error")
		}
		ids, err := extractIDs(body, p, "lookup", n)
		check(err)
		for _, id := range ids {
			if id == "" {
				t.Fatal("extractIDs returned an empty id")
			}
		}
		_, err = listItems(body, p, n)
		check(err)
		if id, found, ok := scanID(body, p); ok {
			want, err := decodedID(body, p, "create", n)
			if found != (err == nil) || found && id != want {
				t.Fatalf("scanID(%q, %q) = %q, %v; decoding gives %q, %v", body, rawPath, id, found, want, err)
			}
		}
		if ids, allIDs, ok := scanIDs(body, p); ok {
			want, err := decodedIDs(body, p, "lookup", n)
			if allIDs != (err == nil) || allIDs && !slices.Equal(ids, want) {
				t.Fatalf("scanIDs(%q, %q) = %q, %v; decoding gives %q, %v", body, rawPath, ids, allIDs, want, err)
			}
		}
		if ex := excerptBytes(body, n); len(ex) > n || !utf8.ValidString(ex) {
			t.Fatalf("excerpt %q is not a valid ≤%d-byte string", ex, n)
		}
	})
}

// FuzzParseConfig must never panic, whatever YAML it is given; a config it
// accepts must build a sink.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("defaults: {base_url: \"http://127.0.0.1:8081\"}\nentities: {listing: {collection: listings}}\n"))
	f.Add([]byte(`
defaults:
  base_url: http://127.0.0.1:8081
  timeout: 3s
  headers: {Authorization: "Bearer ${HOME}"}
entities:
  host:
    create: {method: POST, path: "/h", body: '{"n": {{json .Data.name}}, "k": {{json .Key}}}'}
    update: {method: PATCH, path: "/h/{{.RemoteID | path}}"}
    delete: {method: DELETE, path: "/h/{{.RemoteID | path}}"}
    lookup: {path: "/h?ref={{.Key | query}}", ids: "data[].id"}
    list: {path: "/h?page={{.Page}}", items: "[]", per_page: 10, first_page: 0}
    id_path: "[0].id"
`))
	f.Add([]byte("entities: {a: {collection: b, id_path: \"x[\"}}"))
	f.Add([]byte("defaults: {timeout: 1h}\nentities: {a: {create: {path: '{{range .}}{{end}}'}}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return // keep the run about parsing, not YAML alias bombs
		}
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if strings.Contains(string(data), "${") {
			return // may reference an unset variable, which New rejects by design
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatalf("ParseConfig accepted a config New rejects: %v\n%s", err, data)
		}
		s.Close()
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"", "5", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 || d > MaxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, outside 0..%v", v, d, MaxRetryAfter)
		}
	})
}

// FuzzSpliceBody: whatever data spliceBody takes, the map path takes too,
// and the body it builds means the same as the map path's, with no
// repeated names for a receiver to read differently.
func FuzzSpliceBody(f *testing.F) {
	for _, s := range []string{
		`{"title":"Sea view","n":1.50,"tags":["a",{"b":null}]}`,
		`{"external_id":"x","a":1,"version":2}`, `{"a":1,"version":1,"external_id":2}`, `{"version":1}`,
		` { } `, `{"a":{"a":1,"a":2}}`, `{"a\u0062":1,"ab":2}`, `{"s":"\ud83d\ude00\u00e9\n"}`,
		"{\"s\":\"\xe9\"}", `{"a":1}x`, `[1]`, `{"a":-0.5e+3,"b":true,"c":false}`, `{"a":01}`,
	} {
		f.Add([]byte(s), `k"1/é<`, int64(9))
	}
	f.Fuzz(func(t *testing.T, data []byte, key string, version int64) {
		body, ok := spliceBody(data, key, version)
		if !ok {
			return // the caller takes the map path
		}
		want, ok := decodedBody(t, data, key, version)
		if !ok {
			t.Fatalf("spliced data the map path refuses: %q", data)
		}
		if !plainJSON(body) {
			t.Fatalf("spliced body %q has repeated names or text that decodes differently", body)
		}
		if !sameJSON(t, body, want) {
			t.Fatalf("spliced body %s\nmeans other than %s", body, want)
		}
	})
}

// FuzzPlainPathAgreesWithTemplate: a template compilePlain takes renders
// exactly as text/template renders it.
func FuzzPlainPathAgreesWithTemplate(f *testing.F) {
	for _, src := range []string{
		"/v1/listings", "/v1/listings/{{.RemoteID | path}}", "/v1/listings?external_id={{.Key | query}}",
		"/v1/{{.Entity}}?page={{.Page}}&per_page={{.PerPage}}", "/{{path .Key}}/{{query .RemoteID}}/{{.Version}}",
		"{{- .Key -}} x {{ .Key|path }}", "{{.Version | path}}", "{{.Data.x}}", "{{.Key | query | path}}", "",
		"{{.Key .Key}}", "{{.Key | .Key}}", "{{json .Key}}", "{{.Key | printf}}",
	} {
		f.Add(src, `k "1"/?#%é`, "r/1", "listing", int64(7), 2)
	}
	f.Fuzz(func(t *testing.T, src, key, remoteID, entity string, version int64, page int) {
		tmpl, err := template.New("path").Funcs(templateFuncs).Parse(src)
		if err != nil {
			return
		}
		parts := compilePlain(tmpl)
		if parts == nil {
			return
		}
		d := TemplateData{Entity: entity, Key: key, Version: version, RemoteID: remoteID, Page: page, PerPage: page / 2}
		want, err := execute(tmpl, d)
		if err != nil {
			t.Fatalf("compilePlain took %q, which text/template fails to render: %v", src, err)
		}
		if got := renderPlain("http://h", parts, d); got != "http://h"+want {
			t.Fatalf("%q renders %q, text/template %q", src, got, want)
		}
	})
}
