package resync

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/tracing"
)

// WithTracerProvider traces the run: a "resync page" span per published
// page, each the root of a trace of its own (a run of millions of rows is
// not one trace), whose context every event of the page carries in its
// headers, so the workers' spans for those events are its children. nil
// leaves tracing off.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(r *runner) error {
		if tp != nil {
			r.tracer = tp.Tracer(tracing.InstrumentationName + "/resync")
		}
		return nil
	}
}

// tracePage starts msgs' page span and puts its context in their headers.
func (r *runner) tracePage(ctx context.Context, msgs []bus.Message, lastKey string) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(ctx, "resync page", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			tracing.AttrStream.String(string(bus.Resync)),
			tracing.AttrDestination.String(string(bus.Resync)),
			tracing.AttrOperation.String("send"),
			tracing.AttrBatchSize.Int(len(msgs)),
			tracing.AttrEntity.String(r.spec.Entity),
			tracing.AttrRunID.String(r.spec.RunID),
			tracing.AttrTable.String(r.spec.Table),
			tracing.AttrAfterKey.String(r.cp.LastKey),
			tracing.AttrLastKey.String(lastKey),
		))
	for i := range msgs {
		if msgs[i].Headers == nil {
			msgs[i].Headers = make(map[string]string, 1)
		}
		tracing.Inject(ctx, msgs[i].Headers)
	}
	return ctx, span
}

func endPage(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
