package httpsink_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/sink/httpsink"
)

// A typical sink section: one line for an API that follows the REST
// conventions, full templates for one that does not.
func ExampleParseConfig() {
	cfg, err := httpsink.ParseConfig([]byte(`
defaults:
  base_url: http://127.0.0.1:8081
  timeout: 10s
  headers:
    Authorization: "Bearer ${API_TOKEN}"
entities:
  listing: {collection: listings}
  host:
    create: {method: POST, path: /crm/hosts, body: '{"name": {{json .Data.name}}, "ref": {{json .Key}}}'}
    update: {method: PATCH, path: "/crm/hosts/{{.RemoteID | path}}", body: '{"name": {{json .Data.name}}}'}
    delete: {method: DELETE, path: "/crm/hosts/{{.RemoteID | path}}"}
    lookup: {method: GET, path: "/crm/hosts?ref={{.Key | query}}", ids: "results[].id"}
    id_path: data.id
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Entities())
	l := cfg.EntityConfigs["listing"]
	fmt.Println(l.Update.Method, l.Update.Path)
	fmt.Println(l.Lookup.Method, l.Lookup.Path)

	// A typo is refused with its line; a template that would break at run
	// time is refused with its location.
	_, err = httpsink.ParseConfig([]byte("entities:\n  listing:\n    colection: listings\n"))
	fmt.Println(err)
	_, err = httpsink.ParseConfig([]byte(`
defaults: {base_url: "http://127.0.0.1:8081"}
entities:
  listing: {collection: listings, delete: {method: DELETE, path: "/v1/listings/{{.RemoteID}}"}}
`))
	fmt.Println(err)
	// Output:
	// [host listing]
	// PUT /v1/listings/{{.RemoteID | path}}
	// GET /v1/listings?external_id={{.Key | query}}
	// parse sink config: yaml: unmarshal errors:
	//   line 3: field colection not found in type httpsink.EntityConfig
	// sink.entities.listing.delete.path: inserts .RemoteID unescaped; write {{.RemoteID | path}}
}

func ExampleNew() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Println(strings.TrimSpace(fmt.Sprintf("API got %s %s %s", r.Method, r.URL.RequestURI(), body)))
		switch r.Method {
		case http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id":"L-1"}`)
		case http.MethodPut:
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer api.Close()

	_ = os.Setenv("EXAMPLE_API_TOKEN", "secret")
	cfg, err := httpsink.ParseConfig([]byte(strings.ReplaceAll(`
defaults: {base_url: BASE, headers: {Authorization: "Bearer ${EXAMPLE_API_TOKEN}"}}
entities: {listing: {collection: listings}}
`, "BASE", api.URL)))
	if err != nil {
		fmt.Println(err)
		return
	}
	s, err := httpsink.New(cfg, httpsink.WithLogger(nil))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	ctx := context.Background()
	rec := sink.Record{Entity: "listing", Key: "42", Version: 3, Data: json.RawMessage(`{"title":"Sea view"}`)}
	id, err := s.Create(ctx, rec)
	fmt.Println("created", id, err)

	err = s.Update(ctx, id, rec)
	retry, after := sink.Retryable(err)
	fmt.Println("update:", err, "| retry:", retry, after)

	err = s.Delete(ctx, "listing", id)
	fmt.Println("delete gone:", errors.Is(err, sink.ErrNotFound))
	// Output:
	// API got POST /v1/listings {"title":"Sea view","external_id":"42","version":3}
	// created L-1 <nil>
	// API got PUT /v1/listings/L-1 {"title":"Sea view","external_id":"42","version":3}
	// update: sink update: HTTP 429 Too Many Requests | retry: true 30s
	// API got DELETE /v1/listings/L-1
	// delete gone: true
}
