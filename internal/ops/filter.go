package ops

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/eventsync/bus"
)

// FilterInput is a parked-message filter as a user typed it: on the
// command line (ctl parked's flags) or in a query string or form of the
// console and its API. Empty fields select everything.
type FilterInput struct {
	Entity string
	Reason string
	Stream string
	// Since and Until bound the time a message was parked: an RFC 3339
	// time, or a duration ago such as 90m or 2h.
	Since, Until string
	Limit        string
	IDs          []string
}

// Bounds on what a filter may say, so that outside input cannot ask for
// absurd work.
const (
	maxFilterField = 256
	maxFilterIDs   = 1000
	// MaxLimit bounds a filter's limit.
	MaxLimit = 100000
)

// ParseFilter turns a typed filter into a bus.ParkedFilter, relative
// durations counted back from now. Errors name the field.
func ParseFilter(in FilterInput, now time.Time) (bus.ParkedFilter, error) {
	var f bus.ParkedFilter
	for _, fld := range []struct{ name, v string }{{"entity", in.Entity}, {"reason", in.Reason}, {"stream", in.Stream}, {"since", in.Since}, {"until", in.Until}, {"limit", in.Limit}} {
		if len(fld.v) > maxFilterField {
			return f, fmt.Errorf("%s: longer than %d bytes", fld.name, maxFilterField)
		}
	}
	f.Entity = strings.TrimSpace(in.Entity)
	f.ReasonContains = in.Reason
	if s := strings.TrimSpace(in.Stream); s != "" {
		st, err := bus.ParseStream(s)
		if err != nil {
			return f, fmt.Errorf("stream: %w", err)
		}
		f.Stream = st
	}
	var err error
	if f.Since, err = ParseWhen(in.Since, now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = ParseWhen(in.Until, now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if l := strings.TrimSpace(in.Limit); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 || n > MaxLimit {
			return f, fmt.Errorf("limit: %q is not a number from 0 to %d", l, MaxLimit)
		}
		f.Limit = n
	}
	if len(in.IDs) > maxFilterIDs {
		return f, fmt.Errorf("id: more than %d ids", maxFilterIDs)
	}
	for _, id := range in.IDs {
		if id = strings.TrimSpace(id); id == "" {
			continue
		} else if len(id) > maxFilterField {
			return f, fmt.Errorf("id: longer than %d bytes", maxFilterField)
		}
		f.IDs = append(f.IDs, id)
	}
	return f, nil
}

// ParseWhen reads an RFC 3339 time, or a duration ago (90m, 2h) counted
// back from now; empty is the zero time (no bound).
func ParseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: a duration ago must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 90m", s)
	}
	return t, nil
}

// Empty reports whether f selects every parked message (ignoring Limit):
// a purge of everything needs more care than one of a selection.
func Empty(f bus.ParkedFilter) bool {
	return f.Entity == "" && f.ReasonContains == "" && f.Stream == "" && len(f.IDs) == 0 && f.Since.IsZero() && f.Until.IsZero()
}
