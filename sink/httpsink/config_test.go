package httpsink

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCollectionOnlyGetsConventionalRoutes(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig([]byte(`
defaults: {base_url: "http://127.0.0.1:8081/"}
entities:
  listing: {collection: listings}
  host: {collection: /api/v2/hosts, update: {method: PATCH, path: "/api/v2/hosts/{{.RemoteID | path}}"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Entities(), ","); got != "host,listing" {
		t.Errorf("Entities() = %q", got)
	}
	if cfg.Defaults.Timeout != DefaultTimeout || cfg.Defaults.MaxBodyExcerpt != DefaultMaxBodyExcerpt {
		t.Errorf("defaults not applied: %+v", cfg.Defaults)
	}
	l := cfg.EntityConfigs["listing"]
	want := map[string]string{
		"create": "POST /v1/listings",
		"update": "PUT /v1/listings/{{.RemoteID | path}}",
		"delete": "DELETE /v1/listings/{{.RemoteID | path}}",
		"lookup": "GET /v1/listings?external_id={{.Key | query}}",
		"list":   "GET /v1/listings?page={{.Page}}&per_page={{.PerPage}}",
	}
	got := map[string]string{
		"create": l.Create.Method + " " + l.Create.Path,
		"update": l.Update.Method + " " + l.Update.Path,
		"delete": l.Delete.Method + " " + l.Delete.Path,
		"lookup": l.Lookup.Method + " " + l.Lookup.Path,
		"list":   l.List.Method + " " + l.List.Path,
	}
	for op, w := range want {
		if got[op] != w {
			t.Errorf("listing %s = %q, want %q", op, got[op], w)
		}
	}
	if l.IDPath != "id" || l.Lookup.IDs != "[].id" || l.List.Items != "data" || l.List.ExternalID != "external_id" || l.List.PerPage != 100 || *l.List.FirstPage != 1 {
		t.Errorf("listing defaults = %+v %+v %+v", l, *l.Lookup, *l.List)
	}
	h := cfg.EntityConfigs["host"]
	if h.Update.Method != "PATCH" || h.Create.Path != "/api/v2/hosts" {
		t.Errorf("host = create %+v update %+v", *h.Create, *h.Update)
	}

	// The compiled entity joins base_url without a double slash.
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.entities["listing"].baseURL != "http://127.0.0.1:8081" || s.entities["listing"].timeout != 10*time.Second {
		t.Errorf("compiled listing = %+v", s.entities["listing"])
	}
}

func TestWithDefaultsDoesNotMutateInput(t *testing.T) {
	t.Parallel()
	in := Config{EntityConfigs: map[string]EntityConfig{"listing": {Collection: "listings", List: &ListRequest{Path: "/x?p={{.Page}}"}}}}
	_ = in.WithDefaults()
	if e := in.EntityConfigs["listing"]; e.Create != nil || e.List.Items != "" || e.List.FirstPage != nil {
		t.Errorf("WithDefaults changed its input: %+v %+v", e, *e.List)
	}
}

func TestConfigErrorsNameTheirLocation(t *testing.T) {
	t.Parallel()
	const base = "defaults: {base_url: \"http://127.0.0.1:8081\"}\n"
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"typo is refused with its line", "defaults:\n  base_url: http://x\nentities:\n  listing:\n    colection: listings\n",
			[]string{"line 5", "field colection not found"}},
		{"typo in defaults", "defaults:\n  bsae_url: http://x\n", []string{"line 2", "bsae_url"}},
		{"ids on create", base + "entities:\n  listing:\n    collection: l\n    create: {method: POST, path: /x, ids: id}\n", []string{"line 5", "ids"}},
		{"empty", "", []string{"sink config is empty"}},
		{"no entities", base, []string{"sink.entities: no entities configured"}},
		{"bad entity name", base + "entities: {Listing: {collection: l}}", []string{"sink.entities.Listing", "[a-z][a-z0-9_]*"}},
		{"missing base_url", "entities: {listing: {collection: listings}}", []string{"sink.entities.listing.base_url: missing"}},
		{"bad base_url", "defaults: {base_url: \"ftp://x\"}\nentities: {listing: {collection: l}}", []string{"sink.defaults.base_url", "http://"}},
		{"bad entity base_url", base + "entities: {listing: {collection: l, base_url: \"http://\"}}", []string{"sink.entities.listing.base_url", "no host"}},
		{"bad method", base + "entities: {listing: {collection: l, update: {method: GTE, path: \"/l/{{.RemoteID | path}}\"}}}",
			[]string{"sink.entities.listing.update.method", `"GTE" is not allowed`}},
		{"GET create", base + "entities: {listing: {collection: l, create: {method: GET, path: /l}}}",
			[]string{"sink.entities.listing.create.method"}},
		{"missing method", base + "entities: {listing: {collection: l, create: {path: /l}}}",
			[]string{"sink.entities.listing.create.method: required"}},
		{"path parse error", base + "entities: {listing: {collection: l, update: {method: PUT, path: \"/l/{{.RemoteID\"}}}",
			[]string{"sink.entities.listing.update.path: template does not parse"}},
		{"unknown function", base + "entities: {listing: {collection: l, delete: {method: DELETE, path: \"/l/{{.RemoteID | esc}}\"}}}",
			[]string{"sink.entities.listing.delete.path", "esc"}},
		{"unknown field in template", base + "entities: {listing: {collection: l, delete: {method: DELETE, path: \"/l/{{.Remote}}\"}}}",
			[]string{"sink.entities.listing.delete.path: template fails with sample data"}},
		{"body parse error", base + "entities: {listing: {collection: l, create: {method: POST, path: /l, body: \"{{json .Data\"}}}",
			[]string{"sink.entities.listing.create.body: template does not parse"}},
		{"body not JSON", base + "entities: {listing: {collection: l, create: {method: POST, path: /l, body: '{\"ref\": \"{{.Key}}\"}'}}}",
			[]string{"sink.entities.listing.create.body: does not render valid JSON", "{{json .Key}}"}},
		{"body not JSON at all", base + "entities: {listing: {collection: l, update: {method: PUT, path: \"/l/{{.RemoteID | path}}\", body: 'name={{.Data.name}}'}}}",
			[]string{"sink.entities.listing.update.body: does not render valid JSON"}},
		{"unescaped key in path", base + "entities: {listing: {collection: l, lookup: {path: \"/l?external_id={{.Key}}\"}}}",
			[]string{"sink.entities.listing.lookup.path: inserts .Key unescaped"}},
		{"unescaped remote id", base + "entities: {listing: {collection: l, delete: {method: DELETE, path: \"/l/{{.RemoteID}}\"}}}",
			[]string{"sink.entities.listing.delete.path: inserts .RemoteID unescaped"}},
		{"delete uses key", base + "entities: {listing: {collection: l, delete: {method: DELETE, path: \"/l/{{.Key | path}}\"}}}",
			[]string{"sink.entities.listing.delete.path: uses .Key, which delete does not have"}},
		{"create uses remote id", base + "entities: {listing: {collection: l, create: {method: POST, path: \"/l/{{.RemoteID | path}}\"}}}",
			[]string{"sink.entities.listing.create.path: uses .RemoteID"}},
		{"lookup ignores key", base + "entities: {listing: {collection: l, lookup: {path: \"/l\"}}}",
			[]string{"sink.entities.listing.lookup.path: lookup must use .Key"}},
		{"list never pages", base + "entities: {listing: {collection: l, list: {path: \"/l?per_page={{.PerPage}}\"}}}",
			[]string{"sink.entities.listing.list.path: list must use .Page"}},
		{"path without slash", base + "entities: {listing: {collection: l, create: {method: POST, path: \"l\"}}}",
			[]string{"sink.entities.listing.create.path: must start with \"/\""}},
		{"missing create without collection", base + "entities: {listing: {update: {method: PUT, path: \"/l/{{.RemoteID | path}}\"}}}",
			[]string{"sink.entities.listing.create: required", "sink.entities.listing.delete: required"}},
		{"bad id path", base + "entities: {listing: {collection: l, id_path: \"data..id\"}}",
			[]string{"sink.entities.listing.id_path", "empty field name"}},
		{"multi id path", base + "entities: {listing: {collection: l, id_path: \"[].id\"}}",
			[]string{"sink.entities.listing.id_path", "many values"}},
		{"bad lookup ids", base + "entities: {listing: {collection: l, lookup: {path: \"/l?k={{.Key | query}}\", ids: \"[x]\"}}}",
			[]string{"sink.entities.listing.lookup.ids"}},
		{"bad list paths", base + "entities: {listing: {collection: l, list: {path: \"/l?p={{.Page}}\", items: \"a]\", id: \"[].id\", per_page: -1}}}",
			[]string{"sink.entities.listing.list.items", "sink.entities.listing.list.id", "sink.entities.listing.list.per_page"}},
		{"bad collection", base + "entities: {listing: {collection: \"lis tings\"}}",
			[]string{"sink.entities.listing.collection"}},
		{"negative timeout", "defaults: {base_url: \"http://x\", timeout: -1s}\nentities: {listing: {collection: l}}",
			[]string{"sink.defaults.timeout"}},
		{"bad timeout", "defaults: {base_url: \"http://x\", timeout: soon}\nentities: {listing: {collection: l}}",
			[]string{"line 1", "soon"}},
		{"huge excerpt", base + "entities: {listing: {collection: l, max_body_excerpt: 100000000}}",
			[]string{"sink.entities.listing.max_body_excerpt"}},
		{"bad header name", "defaults: {base_url: \"http://x\", headers: {\"Bad Header\": x}}\nentities: {listing: {collection: l}}",
			[]string{"sink.defaults.headers.Bad Header", "not a valid HTTP header name"}},
		{"malformed env ref", base + "entities: {listing: {collection: l, headers: {Authorization: \"Bearer ${TOKEN\"}}}",
			[]string{"sink.entities.listing.headers.Authorization", "malformed environment reference"}},
		{"dotted external id", base + "entities: {listing: {collection: l, external_id_field: meta.ref}}",
			[]string{"sink.entities.listing.external_id_field", `"meta.ref" is not a plain member name`, "external_ref"}},
		{"empty-ish version field", base + "entities: {listing: {collection: l, version_field: \"my version\"}}",
			[]string{"sink.entities.listing.version_field", `"none" to leave the version out`}},
		{"same member twice", base + "entities: {listing: {collection: l, external_id_field: ref, version_field: ref}}",
			[]string{"sink.entities.listing.version_field", "also the external-id field", "pick another name"}},
		{"same member through the defaults", "defaults: {base_url: \"http://x\", version_field: ref}\nentities: {listing: {collection: l, external_id_field: ref}}",
			[]string{"sink.entities.listing.version_field", `"ref" is also the external-id field`}},
		{"defaults checked where they are", "defaults: {base_url: \"http://x\", external_id_field: \"a b\", version_header: \"X Rev\"}\nentities: {listing: {collection: l}}",
			[]string{"sink.defaults.external_id_field", "sink.defaults.version_header", "not a valid HTTP header name", "X-Source-Version"}},
		{"header the sink sets", base + "entities: {listing: {collection: l, version_header: content-type}}",
			[]string{"sink.entities.listing.version_header", "set by the sink itself"}},
		{"header configured twice", base + "entities: {listing: {collection: l, version_header: X-Rev, headers: {x-rev: \"1\"}}}",
			[]string{"sink.entities.listing.version_header", "also set under headers", "remove one"}},
		{"merge with an odd pair", base + "entities: {listing: {collection: l, create: {method: POST, path: /l, body: '{{merge .Data \"a\" | json}}'}}}",
			[]string{"sink.entities.listing.create.body: template fails with sample data", "name-value pairs"}},
		{"merge of a string", base + "entities: {listing: {collection: l, create: {method: POST, path: /l, body: '{{merge .Key \"a\" 1 | json}}'}}}",
			[]string{"sink.entities.listing.create.body", "not an object"}},
		{"merge with a number as name", base + "entities: {listing: {collection: l, create: {method: POST, path: /l, body: '{{merge .Data 1 2 | json}}'}}}",
			[]string{"sink.entities.listing.create.body", "argument 2 is int, not a member name"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig([]byte(c.doc))
			if err == nil {
				t.Fatalf("ParseConfig accepted:\n%s", c.doc)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestValidateReportsAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	_, err := ParseConfig([]byte(`
entities:
  listing: {collection: listings, id_path: "a..b"}
  host: {create: {method: FETCH, path: /h}}
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"sink.entities.listing.base_url", "sink.entities.listing.id_path", "sink.entities.host.create.method", "sink.entities.host.update: required"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sink.yaml")
	if err := os.WriteFile(path, []byte("defaults: {base_url: \"http://127.0.0.1:8081\"}\nentities: {listing: {collection: listings}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil || len(cfg.Entities()) != 1 {
		t.Fatalf("LoadConfig = %+v, %v", cfg, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("entities: {listing: {collection: listings}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadConfig(bad) error %v does not name the file", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadConfig of a missing file succeeded")
	}
}

func TestConfigBuiltInGo(t *testing.T) {
	t.Parallel()
	cfg := Config{
		Defaults: Defaults{BaseURL: "http://127.0.0.1:1", Headers: map[string]string{"X-Api-Key": "k"}},
		EntityConfigs: map[string]EntityConfig{
			"booking": {
				Create: &Request{Method: http.MethodPost, Path: "/bookings"},
				Update: &Request{Method: http.MethodPut, Path: "/bookings/{{.RemoteID | path}}"},
				Delete: &Request{Method: http.MethodDelete, Path: "/bookings/{{.RemoteID | path}}"},
			},
		},
	}
	if err := cfg.WithDefaults().Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if e := s.entities["booking"]; e.lookup != nil || e.list != nil || e.headers.Get("X-Api-Key") != "k" {
		t.Errorf("compiled booking = %+v", e)
	}
}
