package redact

import (
	"context"
	"fmt"
	"log/slog"
)

// Logger returns l with a handler that removes the secrets of the
// connection strings raws from every message and attribute (strings,
// errors, anything formatted): a driver's log line that echoes a URL
// cannot leak its password. l nil means slog.Default(). Without secrets l
// is returned as is.
func Logger(l *slog.Logger, raws ...string) *slog.Logger {
	return NewScrubber(raws...).Logger(l)
}

// Logger returns l with a handler that removes s's secrets from every
// record (see the function Logger).
func (s *Scrubber) Logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	if s.Empty() {
		return l
	}
	if h, ok := l.Handler().(*handler); ok { // one layer knowing every secret
		merged := &Scrubber{secrets: append(append([]string(nil), h.s.secrets...), s.secrets...)}
		merged.sort()
		return slog.New(&handler{next: h.next, s: merged})
	}
	return slog.New(&handler{next: l.Handler(), s: s})
}

type handler struct {
	next slog.Handler
	s    *Scrubber
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.s.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &handler{next: h.next.WithAttrs(clean), s: h.s}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{next: h.next.WithGroup(name), s: h.s}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.s.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = h.attr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.Any(a.Key, h.s.Error(x))
		default:
			if text := fmt.Sprint(x); h.s.String(text) != text {
				return slog.String(a.Key, h.s.String(text))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
