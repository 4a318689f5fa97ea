package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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
	body := []byte(`{"price":120.5,"rooms":3,"tags":["a","b"],"title":"Sea view","external_id":"k1","version":1}`)

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

// cannedTransport answers every request at once with a fixed body, so that
// BenchmarkSinkCPU measures the sink's own work per call (body, request,
// response, id) without a network or a server.
type cannedTransport struct{ body string }

func (t cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(t.body)), Request: r}, nil
}

// BenchmarkSinkCPU is one create (default body, id from the response) and
// one update of a record with about 1 KiB of data, through a transport
// that answers at once: the sink's CPU and allocations per call.
func BenchmarkSinkCPU(b *testing.B) {
	data := json.RawMessage(fmt.Sprintf(`{"title":"Sea view","description":%q,"price":120.5,"rooms":3,"tags":["a","b"],"geo":{"lat":51.05,"lon":3.72},"active":true,"owner":null}`,
		strings.Repeat("Bright flat with a view. ", 34)))
	resp := `{"id":"r-12345","external_id":"k1","version":1,"title":"Sea view","description":` + strconv.Quote(strings.Repeat("Bright flat with a view. ", 34)) + `}`
	cfg, err := ParseConfig([]byte("defaults: {base_url: \"http://127.0.0.1:1\"}\nentities: {listing: {collection: listings}}\n"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, WithLogger(nil), WithHTTPClient(&http.Client{Transport: cannedTransport{body: resp}}))
	if err != nil {
		b.Fatal(err)
	}
	rec := sink.Record{Entity: "listing", Key: "k1", Version: 1, Data: data}
	b.Run("create", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if id, err := s.Create(context.Background(), rec); err != nil || id != "r-12345" {
				b.Fatal(id, err)
			}
		}
	})
	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := s.Update(context.Background(), "r-12345", rec); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same update to an API with its own names: the key in
	// external_ref, the version in a header instead of the body.
	shaped, err := ParseConfig([]byte("defaults: {base_url: \"http://127.0.0.1:1\"}\nentities: {listing: {collection: listings, external_id_field: external_ref, version_field: none, version_header: X-Source-Version}}\n"))
	if err != nil {
		b.Fatal(err)
	}
	ss, err := New(shaped, WithLogger(nil), WithHTTPClient(&http.Client{Transport: cannedTransport{body: resp}}))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("update_shaped", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := ss.Update(context.Background(), "r-12345", rec); err != nil {
				b.Fatal(err)
			}
		}
	})
}
