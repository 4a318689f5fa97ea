package fakeapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzHandler sends the fake API arbitrary requests (method, path, query,
// body) between a create and a list of one collection. The handler never
// panics; every /v1 answer is a status it can mean with a JSON body (an
// {"error": …} object on failure); a list page holds at most per_page
// records and no more than total; and the admin dump holds exactly the
// records the list counts.
func FuzzHandler(f *testing.F) {
	f.Add(uint8(0), "/v1/items", "", []byte(`{"external_id":"k","version":1}`), "page=1&per_page=2")
	f.Add(uint8(2), "/v1/items/1", "", []byte(`{"external_id":"k","version":2}`), "page=0")
	f.Add(uint8(3), "/v1/items/1", "", []byte(nil), "per_page=99999999999999999999")
	f.Add(uint8(1), "/v1/items", "external_id=k&external_id=x", []byte(nil), "page=2147483647&per_page=1000")
	f.Add(uint8(4), "/v1//x", "%zz", []byte(`[`), "page=-1")
	f.Add(uint8(0), "/_admin/faults", "", []byte(`{"latency":"1h"}`), "")
	f.Add(uint8(5), "/v1/items/1", "", []byte(`{"id":"other","version":1e400}`), "page=%31")
	f.Add(uint8(0), "/v1/items/batch/create", "", []byte(`{"items":[{"external_id":"seed"},[1]]}`), "")
	f.Add(uint8(0), "/v1/items/batch/update", "", []byte(`{"items":[{"id":"1","record":{"version":0}},{"id":"9","record":{}}]}`), "")
	f.Add(uint8(0), "/v1/items/batch/delete", "", []byte(`{"ids":["1","1"]}`), "")
	methods := []string{"POST", "GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	f.Fuzz(func(t *testing.T, m uint8, path, rawQuery string, body []byte, listQuery string) {
		s, err := New(Config{Seed: 1, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		do := func(method, target string, body []byte) *httptest.ResponseRecorder {
			u := &url.URL{Path: target}
			if p, q, ok := strings.Cut(target, "?"); ok {
				u.Path, u.RawQuery = p, q
			}
			r := httptest.NewRequest("GET", "/", bytes.NewReader(body))
			r.Method, r.URL, r.RequestURI = method, u, u.RequestURI()
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, r)
			return w
		}
		if strings.HasPrefix(path, "/_admin/") && methods[int(m)%len(methods)] != "GET" {
			return // admin writes change faults and state files: not outside input
		}
		do("POST", "/v1/items", []byte(`{"external_id":"seed","version":1}`))
		w := do(methods[int(m)%len(methods)], path+"?"+rawQuery, body)
		if w.Code < 200 || w.Code > 599 {
			t.Fatalf("status %d", w.Code)
		}
		if strings.HasPrefix(path, "/v1/") && w.Body.Len() > 0 {
			if !json.Valid(w.Body.Bytes()) {
				t.Fatalf("%s %s: invalid JSON %q", methods[int(m)%len(methods)], path, w.Body.Bytes())
			}
			if w.Code >= 400 {
				var e struct{ Error string }
				if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" {
					t.Fatalf("error answer without an error message: %d %q", w.Code, w.Body.Bytes())
				}
			}
		}
		lw := do("GET", "/v1/items?"+listQuery, nil)
		if lw.Code != http.StatusOK {
			if lw.Code != http.StatusBadRequest {
				t.Fatalf("list ?%s: %d %q", listQuery, lw.Code, lw.Body.Bytes())
			}
			return
		}
		var page struct {
			Data    []json.RawMessage `json:"data"`
			PerPage int               `json:"per_page"`
			Total   int               `json:"total"`
		}
		if err := json.Unmarshal(lw.Body.Bytes(), &page); err != nil {
			if q, _ := url.ParseQuery(listQuery); q.Has(ExternalIDField) {
				return // a lookup answers a bare array
			}
			t.Fatalf("list ?%s: %v in %q", listQuery, err, lw.Body.Bytes())
		}
		if page.PerPage < 1 || page.PerPage > MaxPerPage || len(page.Data) > page.PerPage || len(page.Data) > page.Total {
			t.Fatalf("list ?%s: %d records, per_page %d, total %d", listQuery, len(page.Data), page.PerPage, page.Total)
		}
		dump := do("GET", "/_admin/records/items", nil)
		n := 0
		sc := bufio.NewScanner(dump.Body)
		sc.Buffer(nil, MaxBodyBytes+1)
		for sc.Scan() {
			if !json.Valid(sc.Bytes()) {
				t.Fatalf("dump line %q", sc.Bytes())
			}
			n++
		}
		if n != page.Total {
			t.Fatalf("dump has %d records, the list's total is %d", n, page.Total)
		}
	})
}
