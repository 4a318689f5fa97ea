package httpsink

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"text/template"

	"github.com/eventsync/eventsync/sink"
)

// The external-id field, the version field and the version header are
// settings, per entity with sink.defaults as the fallback; the default
// lookup queries the external-id field and the default list reads it.
func TestBodyShapeSettings(t *testing.T) {
	t.Parallel()
	const data = `{"title":"x","external_id":"theirs","version":"v","rev":0}`
	const shared = ", external_id_field: $ref, version_field: none, version_header: X-Rev"
	cases := []struct {
		name, defaults, yaml        string
		wantBody, wantQuery, header string // header: "Name: value", "" for none
	}{
		{"defaults", "", `listing: {collection: listings}`,
			`{"title":"x","rev":0,"external_id":"k/1","version":7}`, "external_id=k%2F1", ""},
		{"renamed fields", "", `listing: {collection: listings, external_id_field: external_ref, version_field: rev}`,
			`{"title":"x","external_id":"theirs","version":"v","external_ref":"k/1","rev":7}`, "external_ref=k%2F1", ""},
		{"no version in the body, a header instead", "", `listing: {collection: listings, version_field: none, version_header: X-Source-Version}`,
			`{"title":"x","version":"v","rev":0,"external_id":"k/1"}`, "external_id=k%2F1", "X-Source-Version: 7"},
		{"If-Match carries an entity tag", "", `listing: {collection: listings, version_header: if-match}`,
			`{"title":"x","rev":0,"external_id":"k/1","version":7}`, "external_id=k%2F1", `If-Match: "7"`},
		{"from the defaults", shared, "listing: {collection: listings}\n  host: {collection: hosts}",
			`{"title":"x","external_id":"theirs","version":"v","rev":0,"$ref":"k/1"}`, "%24ref=k%2F1", "X-Rev: 7"},
		{"entity overrides the defaults", shared, `listing: {collection: listings, external_id_field: ext, version_field: version, version_header: none}`,
			`{"title":"x","external_id":"theirs","rev":0,"ext":"k/1","version":7}`, "ext=k%2F1", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && r.URL.Query().Get("page") != "" {
					_, _ = io.WriteString(w, `{"data":[{"id":"r1","external_id":"a","ext":"b","external_ref":"c","$ref":"d"}]}`)
					return
				}
				if r.Method == http.MethodGet {
					_, _ = io.WriteString(w, `[{"id":"r1"}]`)
					return
				}
				_, _ = io.WriteString(w, `{"id":"r1"}`)
			})
			s := newSink(t, api.srv.URL, "defaults: {base_url: BASE_URL"+c.defaults+"}\nentities:\n  "+c.yaml+"\n")
			ctx := context.Background()
			rec := sink.Record{Entity: "listing", Key: "k/1", Version: 7, Data: json.RawMessage(data)}
			if _, err := s.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
			if err := s.Update(ctx, "r1", rec); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Lookup(ctx, "listing", "k/1"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "listing", "r1"); err != nil {
				t.Fatal(err)
			}
			var listedKey string
			if err := s.List(ctx, "listing", func(r sink.RemoteRecord) error { listedKey = r.Key; return nil }); err != nil {
				t.Fatal(err)
			}
			reqs := api.requests()
			for i, r := range reqs[:2] {
				if r.Body != c.wantBody {
					t.Errorf("request %d body %s\nwant %s", i, r.Body, c.wantBody)
				}
				// The map path (data the splice leaves alone) means the same.
				m, err := decodeData([]byte(data))
				if err != nil {
					t.Fatal(err)
				}
				mapped, err := s.entities["listing"].create.shape.mapBody(m, "k/1", 7)
				if err != nil || !sameJSON(t, mapped, []byte(c.wantBody)) {
					t.Errorf("map path body %s, %v; want the meaning of %s", mapped, err, c.wantBody)
				}
			}
			if reqs[2].Query != c.wantQuery {
				t.Errorf("lookup query %q, want %q", reqs[2].Query, c.wantQuery)
			}
			wantListed := map[string]string{"external_id": "a", "ext": "b", "external_ref": "c", "$ref": "d"}[s.entities["listing"].create.shape.idField]
			if listedKey != wantListed {
				t.Errorf("list read key %q, want %q (the external-id field)", listedKey, wantListed)
			}
			for i, r := range reqs {
				var got []string
				for name := range r.Headers {
					switch name {
					case "Accept", "Accept-Encoding", "Content-Length", "Content-Type", "User-Agent":
					default:
						got = append(got, name+": "+r.Headers.Get(name))
					}
				}
				want := c.header
				if i >= 2 { // lookup, delete and list carry no version
					want = ""
				}
				if strings.Join(got, ",") != want {
					t.Errorf("request %d (%s) version headers %q, want %q", i, r.Method, got, want)
				}
			}
		})
	}
}

// merge copies .Data (or any object in it) with members set, for bodies
// the default body cannot express: an envelope, other member names, extra
// members.
func TestMergeTemplate(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, `{"data":{"id":5}}`) })
	s := newSink(t, api.srv.URL, `
defaults: {base_url: BASE_URL}
entities:
  deal:
    collection: /v2/deals
    id_path: data.id
    create: {method: POST, path: /v2/deals, body: '{"deal": {{ merge .Data "external_ref" .Key "rev" .Version | json }}}'}
    update: {method: PATCH, path: "/v2/deals/{{.RemoteID | path}}", body: '{{ merge .Data.owner "deal" .Key "title" .Data.title | json }}'}
`)
	ctx := context.Background()
	data := `{"title":"Big <one>","amount":12.50,"rev":"theirs","owner":{"name":"Ada"}}`
	id, err := s.Create(ctx, sink.Record{Entity: "deal", Key: `d"1`, Version: 3, Data: json.RawMessage(data)})
	if err != nil || id != "5" {
		t.Fatalf("Create = %q, %v", id, err)
	}
	if err := s.Update(ctx, id, sink.Record{Entity: "deal", Key: `d"1`, Version: 4, Data: json.RawMessage(data)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, id, sink.Record{Entity: "deal", Key: "d2", Version: 5, Data: json.RawMessage(`{"title":"no owner"}`)}); err != nil {
		t.Fatal(err)
	}
	reqs := api.requests()
	want := []string{
		`{"deal": {"amount":12.50,"external_ref":"d\"1","owner":{"name":"Ada"},"rev":3,"title":"Big <one>"}}`,
		`{"deal":"d\"1","name":"Ada","title":"Big <one>"}`,
		`{"deal":"d2","title":"no owner"}`, // an absent member merges as an empty object
	}
	for i, w := range want {
		if reqs[i].Body != w {
			t.Errorf("request %d body %s\nwant %s", i, reqs[i].Body, w)
		}
	}
}

// merge never changes the object it copies.
func TestMergeLeavesItsArgumentAlone(t *testing.T) {
	t.Parallel()
	data := map[string]any{"a": json.Number("1"), "b": map[string]any{"c": true}}
	tmpl := template.Must(template.New("t").Funcs(templateFuncs).Parse(`{{ merge .Data "a" 2 "z" .Key | json }}|{{ json .Data }}`))
	out, err := execute(tmpl, TemplateData{Key: "k", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":2,"b":{"c":true},"z":"k"}|{"a":1,"b":{"c":true}}`; out != want {
		t.Fatalf("rendered %s, want %s", out, want)
	}
}
