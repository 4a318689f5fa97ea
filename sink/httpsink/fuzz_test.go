package httpsink

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzExtractID feeds arbitrary response bodies and paths to every response
// parser: they must never panic, and errors must carry a bounded, valid
// UTF-8 excerpt.
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
