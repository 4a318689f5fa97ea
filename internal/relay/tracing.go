package relay

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/bus"
	"github.com/eventsync/eventsync/internal/tracing"
	"github.com/eventsync/eventsync/source"
)

// batchTrace is the spans of one batch: a "send live" span for the
// publish, and per row a "create live" span that begins the row's own
// trace (one trace per change, continued by the worker that applies it)
// and links to the batch's span. nil when tracing is off.
type batchTrace struct {
	batch trace.Span
	rows  []trace.Span
}

// traceBatch starts the batch's spans and puts each row's trace context
// into its message's headers.
func (r *Relay) traceBatch(ctx context.Context, rows []source.Row, msgs []bus.Message) (context.Context, *batchTrace) {
	ctx, batch := r.tracer.Start(ctx, "send "+string(bus.Live), trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			tracing.AttrStream.String(string(bus.Live)),
			tracing.AttrDestination.String(string(bus.Live)),
			tracing.AttrOperation.String("send"),
			tracing.AttrBatchSize.Int(len(msgs)),
		))
	link := trace.LinkFromContext(ctx)
	bt := &batchTrace{batch: batch, rows: make([]trace.Span, len(rows))}
	for i, row := range rows {
		rctx, span := r.tracer.Start(ctx, "create "+string(bus.Live), trace.WithNewRoot(),
			trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(link),
			trace.WithAttributes(
				tracing.AttrStream.String(string(bus.Live)),
				tracing.AttrDestination.String(string(bus.Live)),
				tracing.AttrOperation.String("create"),
				tracing.AttrOutboxID.Int64(row.ID),
				tracing.AttrEntity.String(row.Entity),
				tracing.AttrKey.String(row.Key),
				tracing.AttrVersion.Int64(row.Version),
			))
		if reason := msgs[i].Headers[bus.HeaderRejected]; reason != "" {
			span.SetAttributes(tracing.AttrRejected.String(reason))
		}
		if msgs[i].Headers == nil {
			msgs[i].Headers = make(map[string]string, 1)
		}
		tracing.Inject(rctx, msgs[i].Headers)
		bt.rows[i] = span
	}
	return ctx, bt
}

// end ends every span of the batch, with err (the publish's or the
// mark-sent's) as their status.
func (bt *batchTrace) end(err error) {
	if bt == nil {
		return
	}
	for _, s := range append(bt.rows, bt.batch) {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
}
