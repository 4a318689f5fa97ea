package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"testing"

	"github.com/eventsync/eventsync/sink"
)

// genExpected yields n listing states without any I/O.
type genExpected struct{ n int }

func (g genExpected) String() string { return "generated" }

func (g genExpected) Each(_ context.Context, fn func(Item) error) error {
	for i := range g.n {
		data := fmt.Appendf(nil, `{"id":%d,"title":"Listing %d","price":%d.50,"tags":{"sea":true,"rooms":[1,2]},"city":"Lisbon"}`, i, i, i%500)
		if err := fn(Item{Key: "k-" + strconv.Itoa(i), Version: int64(i + 1), Data: data}); err != nil {
			return err
		}
	}
	return nil
}

// genRemote lists the matching remote records, decoded as a lister would.
type genRemote struct{ n int }

func (g genRemote) List(_ context.Context, _ string, fn func(sink.RemoteRecord) error) error {
	for i := range g.n {
		fields := map[string]any{
			"id": "r" + strconv.Itoa(i), "external_id": "k-" + strconv.Itoa(i), "version": json.Number(strconv.Itoa(i + 1)),
			"title": "Listing " + strconv.Itoa(i), "price": json.Number(strconv.Itoa(i%500) + ".5"),
			"tags": map[string]any{"rooms": []any{json.Number("1"), json.Number("2")}, "sea": true}, "city": "Lisbon",
		}
		if err := fn(sink.RemoteRecord{RemoteID: "r" + strconv.Itoa(i), Key: "k-" + strconv.Itoa(i), Fields: fields}); err != nil {
			return err
		}
	}
	return nil
}

const benchKeys = 100_000

// BenchmarkCheck compares 100,000 keys per op; BenchmarkCheckBaseline is
// the same work minus verify (generating and decoding both sides), so the
// difference is verify's own cost. heap-bytes/key is the live heap after a
// check, divided by the keys: what a million keys cost in memory.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	var res *Result
	for b.Loop() {
		var err error
		res, err = Check(ctx, Config{Entity: "listing", Expected: genExpected{benchKeys}, Remote: genRemote{benchKeys}})
		if err != nil {
			b.Fatal(err)
		}
		if !res.Report.Converged {
			b.Fatalf("not converged: %+v", res.Report.Counts)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	runtime.KeepAlive(res)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(before.HeapAlloc-after.HeapAlloc)/benchKeys, "heap-bytes/key")
}

func BenchmarkCheckBaseline(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		n := 0
		_ = genExpected{benchKeys}.Each(ctx, func(it Item) error {
			m, err := decodeObject(it.Data)
			n += len(m)
			return err
		})
		_ = genRemote{benchKeys}.List(ctx, "listing", func(r sink.RemoteRecord) error {
			n += len(r.Fields)
			return nil
		})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
}
