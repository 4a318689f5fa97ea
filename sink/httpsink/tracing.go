package httpsink

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/internal/tracing"
)

// WithTracerProvider traces every HTTP call the sink makes: a client span
// per request (OpenTelemetry's HTTP conventions), a child of the span in
// the call's context, and the W3C traceparent header on the request, so
// the API's own traces continue the event's. nil leaves tracing off.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Sink) error {
		s.tracerProvider = tp
		return nil
	}
}

// traceClient returns c with its transport traced by tp (c itself is left
// alone: it may be the caller's).
func traceClient(c *http.Client, tp trace.TracerProvider) *http.Client {
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	traced := *c
	traced.Transport = tracedTransport{
		Transport: otelhttp.NewTransport(base,
			otelhttp.WithTracerProvider(tp),
			otelhttp.WithPropagators(tracing.Propagator),
			otelhttp.WithMeterProvider(noop.NewMeterProvider())),
		base: base,
	}
	return &traced
}

// tracedTransport keeps CloseIdleConnections working through the
// instrumentation.
type tracedTransport struct {
	*otelhttp.Transport
	base http.RoundTripper
}

func (t tracedTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
