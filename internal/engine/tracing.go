package engine

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/internal/tracing"
	"github.com/eventsync/eventsync/sink"
	"github.com/eventsync/eventsync/store"
)

// Tracing is off unless Config.TracerProvider is set: then the worker
// starts a consumer span per delivery ("process <stream>", a child of the
// trace context its producer put in the message headers), and the
// worker's Applier works through a store and a sink that give every lease
// call and every API call a child span. With no provider none of this
// code runs: the hot path pays one nil check per delivery.

// tracer returns cfg's tracer, nil when tracing is off.
func (c Config) tracer() trace.Tracer {
	if c.TracerProvider == nil {
		return nil
	}
	return c.TracerProvider.Tracer(tracing.InstrumentationName + "/worker")
}

// handleTraced is handle inside a span continuing the trace of t's
// message.
func (w *Worker) handleTraced(ctx context.Context, t task) handled {
	if w.tracer == nil {
		return w.handle(ctx, t)
	}
	ctx = tracing.Extract(ctx, t.d.Headers())
	ctx, span := w.tracer.Start(ctx, "process "+string(t.stream),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			tracing.AttrStream.String(string(t.stream)),
			tracing.AttrDestination.String(string(t.stream)),
			tracing.AttrOperation.String("process"),
			tracing.AttrAttempt.Int(t.d.Attempt()),
		))
	if t.held {
		span.AddEvent("waited in memory for its key", trace.WithAttributes(
			attribute.String("eventsync.waited", w.cfg.Now().Sub(t.since).String())))
	}
	h := w.handle(ctx, t)
	span.SetAttributes(tracing.AttrEntity.String(h.key.Entity), tracing.AttrKey.String(h.key.Key))
	span.End()
	return h
}

// traceOutcome records out on the delivery's span (ctx's), if any.
func traceOutcome(ctx context.Context, out Outcome) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(tracing.AttrResult.String(string(out.Result)))
	if out.Reason != "" {
		span.SetAttributes(tracing.AttrReason.String(out.Reason))
	}
	if out.Delay > 0 {
		span.SetAttributes(attribute.String("eventsync.retry_in", out.Delay.String()))
	}
	switch out.Result {
	case ResultParked:
		span.SetStatus(codes.Error, out.Reason)
	case ResultRetried:
		if out.Err != nil {
			span.RecordError(out.Err)
		}
	}
}

// traceWaiting marks ctx's span: its delivery waits in memory (why: for
// another event of its key, or its debounce window), to be taken on in a
// span of its own.
func traceWaiting(ctx context.Context, why string) {
	trace.SpanFromContext(ctx).SetAttributes(tracing.AttrResult.String(why))
}

// tracedStore gives the lease calls of the apply algorithm spans.
type tracedStore struct {
	store.Store
	tracer trace.Tracer
}

func (s tracedStore) start(ctx context.Context, name string, k store.Key) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.AttrEntity.String(k.Entity), tracing.AttrKey.String(k.Key)))
}

func endSpan(span trace.Span, err error, expected ...error) {
	if err != nil {
		quiet := false
		for _, e := range expected {
			quiet = quiet || errors.Is(err, e)
		}
		if quiet {
			span.SetAttributes(attribute.String("eventsync.answer", err.Error()))
		} else {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

func (s tracedStore) Acquire(ctx context.Context, k store.Key, owner string, ttl time.Duration, version int64) (store.Lease, store.State, error) {
	ctx, span := s.start(ctx, "lease", k)
	span.SetAttributes(tracing.AttrVersion.Int64(version))
	l, st, err := s.Store.Acquire(ctx, k, owner, ttl, version)
	if err == nil {
		span.SetAttributes(attribute.Bool("eventsync.lease.held", l.Held()),
			attribute.Int64("eventsync.applied_version", st.AppliedVersion),
			attribute.Int64("eventsync.lease.token", l.Token))
	}
	endSpan(span, err, store.ErrLocked)
	return l, st, err
}

func (s tracedStore) Extend(ctx context.Context, l store.Lease, ttl time.Duration) (store.Lease, error) {
	ctx, span := s.start(ctx, "lease extend", l.Key)
	l2, err := s.Store.Extend(ctx, l, ttl)
	endSpan(span, err)
	return l2, err
}

func (s tracedStore) Commit(ctx context.Context, l store.Lease, c store.Commit) error {
	ctx, span := s.start(ctx, "commit", l.Key)
	span.SetAttributes(tracing.AttrVersion.Int64(c.Version), attribute.Bool("eventsync.deleted", c.Deleted))
	err := s.Store.Commit(ctx, l, c)
	endSpan(span, err)
	return err
}

func (s tracedStore) Release(ctx context.Context, l store.Lease) error {
	ctx, span := s.start(ctx, "lease release", l.Key)
	err := s.Store.Release(ctx, l)
	endSpan(span, err)
	return err
}

func (s tracedStore) ReleaseFailed(ctx context.Context, l store.Lease) error {
	ctx, span := s.start(ctx, "lease release failed call", l.Key)
	err := s.Store.ReleaseFailed(ctx, l)
	endSpan(span, err)
	return err
}

func (s tracedStore) MarkRepair(ctx context.Context, k store.Key) error {
	ctx, span := s.start(ctx, "mark repair", k)
	err := s.Store.MarkRepair(ctx, k)
	endSpan(span, err)
	return err
}

// tracedSink gives each API call of the apply algorithm a span, whatever
// the sink (an HTTP sink's request span, with the traceparent it sends,
// is its child).
type tracedSink struct {
	sink.Sink
	tracer trace.Tracer
}

func (s tracedSink) start(ctx context.Context, op, entity string) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, "sink "+op, trace.WithAttributes(tracing.AttrEntity.String(entity)))
}

func (s tracedSink) Create(ctx context.Context, r sink.Record) (string, error) {
	ctx, span := s.start(ctx, "create", r.Entity)
	span.SetAttributes(tracing.AttrKey.String(r.Key), tracing.AttrVersion.Int64(r.Version))
	id, err := s.Sink.Create(ctx, r)
	span.SetAttributes(attribute.String("eventsync.remote_id", id))
	endSpan(span, err)
	return id, err
}

func (s tracedSink) Update(ctx context.Context, remoteID string, r sink.Record) error {
	ctx, span := s.start(ctx, "update", r.Entity)
	span.SetAttributes(tracing.AttrKey.String(r.Key), tracing.AttrVersion.Int64(r.Version),
		attribute.String("eventsync.remote_id", remoteID))
	err := s.Sink.Update(ctx, remoteID, r)
	endSpan(span, err, sink.ErrNotFound)
	return err
}

func (s tracedSink) Delete(ctx context.Context, entity, remoteID string) error {
	ctx, span := s.start(ctx, "delete", entity)
	span.SetAttributes(attribute.String("eventsync.remote_id", remoteID))
	err := s.Sink.Delete(ctx, entity, remoteID)
	endSpan(span, err, sink.ErrNotFound)
	return err
}

func (s tracedSink) Lookup(ctx context.Context, entity, key string) ([]string, error) {
	ctx, span := s.start(ctx, "lookup", entity)
	span.SetAttributes(tracing.AttrKey.String(key))
	ids, err := s.Sink.Lookup(ctx, entity, key)
	span.SetAttributes(attribute.Int("eventsync.found", len(ids)))
	endSpan(span, err)
	return ids, err
}

// traced returns st and sk with spans for their calls when cfg traces.
func traced(st store.Store, sk sink.Sink, cfg Config) (store.Store, sink.Sink, Config) {
	if tr := cfg.tracer(); tr != nil && st != nil && sk != nil {
		return tracedStore{st, tr}, tracedSink{sk, tr}, cfg
	}
	return st, sk, cfg
}

// tracedBatchSink gives each batch call a span, a child of the span of
// the write that sent it (its group's leader's); the writes themselves
// are traced above the batcher by tracedSink.
type tracedBatchSink struct {
	sink.BatchSink
	tracer trace.Tracer
}

func (s tracedBatchSink) WriteBatch(ctx context.Context, entity string, op sink.Op, items []sink.BatchItem) ([]sink.BatchResult, error) {
	ctx, span := s.tracer.Start(ctx, "sink batch "+string(op), trace.WithAttributes(
		tracing.AttrEntity.String(entity), attribute.Int("eventsync.batch.size", len(items))))
	results, err := s.BatchSink.WriteBatch(ctx, entity, op, items)
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
		}
	}
	span.SetAttributes(attribute.Int("eventsync.batch.failed", failed))
	endSpan(span, err)
	return results, err
}
