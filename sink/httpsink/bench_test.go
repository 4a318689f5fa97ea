package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/eventsync/eventsync/sink"
)

// BenchmarkUpdate measures one sink update (template render, default body,
// HTTP round trip, classification) against a local server; the baseline is
// the bare HTTP round trip with the same body, in the same run.
func BenchmarkUpdate(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"id":"r1"}`)
	}))
	defer srv.Close()
	data := json.RawMessage(`{"title":"Sea view","price":120.5,"rooms":3,"tags":["a","b"]}`)
	body, _ := defaultBody(map[string]any{"title": "Sea view", "price": json.Number("120.5"), "rooms": json.Number("3"), "tags": []any{"a", "b"}}, "k1", 1)

	b.Run("baseline_bare_http", func(b *testing.B) {
		client := &http.Client{Transport: newTransport()}
		defer client.CloseIdleConnections()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, srv.URL+"/v1/listings/r1", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	})
	b.Run("sink_update", func(b *testing.B) {
		cfg, err := ParseConfig([]byte("defaults: {base_url: \"" + srv.URL + "\"}\nentities: {listing: {collection: listings}}\n"))
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(cfg, WithLogger(nil))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		rec := sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: data}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Update(context.Background(), "r1", rec); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRenderAndParse isolates the sink's own CPU work per call: body
// rendering and id extraction, without HTTP.
func BenchmarkRenderAndParse(b *testing.B) {
	p, _ := parsePath("data.id")
	resp := []byte(`{"data":{"id":12345,"title":"Sea view"}}`)
	data := map[string]any{"title": "Sea view", "price": json.Number("120.5")}
	for b.Loop() {
		if _, err := defaultBody(data, "k1", 7); err != nil {
			b.Fatal(err)
		}
		if _, err := extractID(resp, p, "create", 512); err != nil {
			b.Fatal(err)
		}
	}
}
