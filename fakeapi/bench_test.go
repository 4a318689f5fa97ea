package fakeapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/eventsync/eventsync/fakeapi"
)

// The handler benchmarks measure the fake's own cost per request, without
// the network; BenchmarkHandlerBaseline is a handler that only writes a
// fixed record, the floor any HTTP handler pays. Throughput over real TCP is
// measured with wrk (docs/benchmarks.md).

var benchRecord = []byte(`{"external_id":"k1","id":"1","name":"listing 1","price":120.5,"tags":["a","b"],"version":1}`)

// BenchmarkHandlerBaseline is the floor: a handler that reads the body and
// writes a fixed record, run the same way as the fake's benchmarks.
func BenchmarkHandlerBaseline(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(benchRecord)))
		_, _ = w.Write(benchRecord)
	})
	b.Run("get", func(b *testing.B) {
		req := httptest.NewRequest("GET", "/v1/listing/1", nil)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	})
	b.Run("post", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/listing", strings.NewReader(string(benchRecord))))
			}
		})
	})
}

func BenchmarkHandlerGet(b *testing.B) {
	srv := benchServer(b)
	h := srv.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/listing", strings.NewReader(string(benchRecord))))
	if rec.Code != http.StatusCreated {
		b.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	req := httptest.NewRequest("GET", "/v1/listing/1", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	})
}

func BenchmarkHandlerCreate(b *testing.B) {
	srv := benchServer(b)
	h := srv.Handler()
	body := `{"external_id":"k1","name":"listing 1","price":120.5,"tags":["a","b"],"version":1}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/listing", strings.NewReader(body)))
		}
	})
}

// BenchmarkHandlerBatchCreate creates 100 records per request, the
// default batch limit; ns/item compares with BenchmarkHandlerCreate's
// ns/op.
func BenchmarkHandlerBatchCreate(b *testing.B) {
	srv := benchServer(b)
	h := srv.Handler()
	items := make([]string, fakeapi.DefaultMaxBatch)
	for i := range items {
		items[i] = `{"external_id":"k` + strconv.Itoa(i) + `","name":"listing 1","price":120.5,"tags":["a","b"],"version":1}`
	}
	body := `{"items":[` + strings.Join(items, ",") + `]}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/listing/batch/create", strings.NewReader(body)))
			if rec.Code != http.StatusOK {
				b.Errorf("batch create: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(items)), "ns/item")
}

func benchServer(b *testing.B) *fakeapi.Server {
	b.Helper()
	srv, err := fakeapi.New(fakeapi.Config{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return srv
}
