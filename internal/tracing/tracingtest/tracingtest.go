// Package tracingtest helps tests read the spans an in-memory exporter
// (go.opentelemetry.io/otel/sdk/trace/tracetest) recorded.
package tracingtest

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Attr returns the span's attribute k as text, "" when absent.
func Attr(s tracetest.SpanStub, k attribute.Key) string {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return kv.Value.Emit()
		}
	}
	return ""
}

// Names lists the spans' names, for failure messages.
func Names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}
