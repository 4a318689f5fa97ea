package event

import (
	"fmt"
	"strings"
	"testing"
)

// benchEvents are a small event like the engine benchmark's (about 110
// bytes) and one of about 1 KiB like the worker runs.
func benchEvents() map[string][]byte {
	return map[string][]byte{
		"small": []byte(`{"id":"e-k1-1","entity":"listing","key":"k1","version":1,"op":"upsert","data":{"title":"bench"}}`),
		"1KiB": []byte(fmt.Sprintf(`{"id":"e-k1-7","entity":"listing","key":"k1","version":7,"op":"upsert","occurred_at":"2026-01-02T15:04:05.123Z",`+
			`"data":{"title":"Sea view","description":%q,"price":120.5,"rooms":3,"tags":["a","b"],"geo":{"lat":51.05,"lon":3.72},"active":true,"owner":null}}`,
			strings.Repeat("Bright flat with a view. ", 34))),
	}
}

// BenchmarkParse is the cost of decoding and validating one event, the
// first step of every delivery.
func BenchmarkParse(b *testing.B) {
	for _, name := range []string{"small", "1KiB"} {
		body := benchEvents()[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Parse(body, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
