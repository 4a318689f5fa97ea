// Package tracing sets up OpenTelemetry tracing for eventsync's commands
// from the standard OTEL_* environment variables, and carries W3C trace
// context (traceparent, tracestate, baggage) in bus message headers.
//
// Tracing is off unless configured: FromEnv returns a nil provider when
// no exporter is asked for, and every component then skips its tracing
// code altogether (no spans, no context extraction, no allocations).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// InstrumentationName names eventsync's tracers (the instrumentation
// scope of every span it makes).
const InstrumentationName = "github.com/eventsync/eventsync"

// Propagator is the W3C trace context and baggage propagator eventsync
// uses in message headers and on the API requests it sends.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Inject writes ctx's trace context into headers (traceparent, and
// tracestate and baggage when there are any). headers must not be nil.
func Inject(ctx context.Context, headers map[string]string) {
	Propagator.Inject(ctx, propagation.MapCarrier(headers))
}

// Extract returns ctx carrying the remote trace context of headers, if
// they have one.
func Extract(ctx context.Context, headers map[string]string) context.Context {
	return Propagator.Extract(ctx, propagation.MapCarrier(headers))
}

// Attribute keys eventsync sets on its spans.
const (
	AttrStream    = attribute.Key("eventsync.stream")
	AttrEntity    = attribute.Key("eventsync.entity")
	AttrKey       = attribute.Key("eventsync.key")
	AttrVersion   = attribute.Key("eventsync.version")
	AttrOutboxID  = attribute.Key("eventsync.outbox_id")
	AttrResult    = attribute.Key("eventsync.result")
	AttrAttempt   = attribute.Key("eventsync.attempt")
	AttrReason    = attribute.Key("eventsync.reason")
	AttrRejected  = attribute.Key("eventsync.rejected")
	AttrBatchSize = attribute.Key("messaging.batch.message_count")
	AttrRunID     = attribute.Key("eventsync.resync.run_id")
	AttrTable     = attribute.Key("eventsync.resync.table")
	AttrAfterKey  = attribute.Key("eventsync.resync.after_key")
	AttrLastKey   = attribute.Key("eventsync.resync.last_key")
	// AttrDestination and AttrOperation follow OpenTelemetry's messaging
	// conventions (messaging.destination.name, messaging.operation.type).
	AttrDestination = attribute.Key("messaging.destination.name")
	AttrOperation   = attribute.Key("messaging.operation.type")
)

// Env names read by FromEnv besides those the SDK and the OTLP exporter
// read themselves (OTEL_EXPORTER_OTLP_*, OTEL_TRACES_SAMPLER*, OTEL_BSP_*,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES).
const (
	EnvSDKDisabled    = "OTEL_SDK_DISABLED"
	EnvTracesExporter = "OTEL_TRACES_EXPORTER"
	EnvEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
)

// Settings are what FromEnv decided, for the start-up log.
type Settings struct {
	// Exporters named, in order ("otlp", "console"); empty when off.
	Exporters []string
	// Endpoint is the OTLP endpoint variable's value, if set.
	Endpoint string
}

// FromEnv builds a tracer provider from the process's environment (the
// SDK and the exporter read their own variables from it too). It returns
// a nil provider, and no error,
// when tracing is off: OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none,
// or neither OTEL_TRACES_EXPORTER nor an OTLP endpoint set. Exporters:
// "otlp" (over HTTP, protobuf or JSON, or gRPC as OTEL_EXPORTER_OTLP_PROTOCOL
// says; the exporter reads its own OTEL_EXPORTER_OTLP_* variables) and
// "console" (spans as JSON on
// console, for trying it out). service names the process (service.name,
// which OTEL_SERVICE_NAME overrides); version is service.version.
//
// The caller owns the provider and must Shutdown it on exit, which
// flushes the spans still batched.
func FromEnv(ctx context.Context, console io.Writer, service, version string) (*sdktrace.TracerProvider, Settings, error) {
	get := func(name string) string { return strings.TrimSpace(os.Getenv(name)) }
	var set Settings
	if strings.EqualFold(get(EnvSDKDisabled), "true") {
		return nil, set, nil
	}
	endpoint := get(EnvTracesEndpoint)
	if endpoint == "" {
		endpoint = get(EnvEndpoint)
	}
	set.Endpoint = endpoint
	names := get(EnvTracesExporter)
	if names == "" {
		if endpoint == "" {
			return nil, set, nil
		}
		names = "otlp"
	}
	var exporters []sdktrace.SpanExporter
	for _, name := range strings.Split(names, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		switch name {
		case "", "none":
			continue
		case "otlp":
			protocol := get(EnvTracesProtocol)
			if protocol == "" {
				protocol = get(EnvProtocol)
			}
			// The exporters read the endpoint, headers, timeout, TLS and
			// compression from OTEL_EXPORTER_OTLP_* themselves, and
			// connect lazily: an unreachable collector costs dropped
			// spans, not a failed start.
			var exp sdktrace.SpanExporter
			var err error
			switch protocol {
			case "", "http/protobuf", "http/json":
				exp, err = otlptracehttp.New(ctx)
			case "grpc":
				exp, err = otlptracegrpc.New(ctx)
			default:
				return nil, set, fmt.Errorf("%s=%q: unknown OTLP protocol; use http/protobuf (the collector's port 4318), http/json or grpc (port 4317)", EnvTracesProtocol, protocol)
			}
			if err != nil {
				return nil, set, fmt.Errorf("OTLP trace exporter: %w", err)
			}
			exporters = append(exporters, exp)
		case "console":
			if console == nil {
				console = os.Stderr
			}
			exp, err := stdouttrace.New(stdouttrace.WithWriter(console))
			if err != nil {
				return nil, set, fmt.Errorf("console trace exporter: %w", err)
			}
			exporters = append(exporters, exp)
		default:
			return nil, set, fmt.Errorf("%s=%q: unknown exporter %q; use otlp, console or none", EnvTracesExporter, names, name)
		}
		set.Exporters = append(set.Exporters, name)
	}
	if len(exporters) == 0 {
		return nil, set, nil
	}
	res, err := Resource(ctx, service, version)
	if err != nil {
		return nil, set, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	for _, exp := range exporters {
		// The batcher reads OTEL_BSP_* (queue size, delay, batch size).
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	// The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK
	// (default: parent-based, always on).
	return sdktrace.NewTracerProvider(opts...), set, nil
}

// Resource describes this process: service.name (default service, which
// OTEL_SERVICE_NAME overrides), service.version, OTEL_RESOURCE_ATTRIBUTES,
// the host and the SDK.
func Resource(ctx context.Context, service, version string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{attribute.String("service.name", service)}
	if version != "" {
		attrs = append(attrs, attribute.String("service.version", version))
	}
	// Later detectors win: the environment overrides the defaults.
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	return res, nil
}
