package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/eventsync/eventsync/event"
	"github.com/eventsync/eventsync/source"
)

// encode returns the message body the relay publishes for row and, when
// the row is not a valid event that fits in maxBytes, the reason the worker
// will park it with. It never fails: a row that cannot be published as an
// event is published as a rejection (see rejection), so that it is parked
// where operators look, and the rows behind it are not held back.
func encode(row source.Row, maxBytes int) (body []byte, reason string) {
	ev := row.Event()
	// The common case costs what the relay always paid (a Validate and a
	// Marshal) plus a UTF-8 scan: encoding/json would silently replace
	// invalid UTF-8 in the key, making the event name another entity.
	if len(row.Faults) == 0 && utf8.ValidString(row.Entity) && utf8.ValidString(row.Key) && utf8.Valid(row.Data) &&
		representable(row.Occurred) && ev.Validate() == nil {
		body, err := json.Marshal(ev)
		if err == nil && len(body) <= maxBytes {
			return body, ""
		}
		if err == nil {
			reason = describe(row, []string{fmt.Sprintf("the event is %d bytes, over the %d-byte limit for one event; "+
				"keep data smaller (exclude large columns) or raise max_event_bytes for the relay and the worker", len(body), maxBytes)})
			return rejection(row, reason, maxBytes), reason
		}
		// Validate accepts only what encodes, so this is not expected;
		// should it happen, the row is still parked with the error.
		reason = describe(row, []string{fmt.Sprintf("it cannot be encoded as JSON: %v", err)})
		return rejection(row, reason, maxBytes), reason
	}
	reason = describe(row, problems(row))
	return rejection(row, reason, maxBytes), reason
}

// representable reports whether t can be an event's occurred_at: RFC 3339
// has four-digit years.
func representable(t time.Time) bool {
	if t.IsZero() {
		return true // no time: the event has no occurred_at
	}
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// problems lists everything wrong with a row that is not a valid event,
// each with how to fix it.
func problems(row source.Row) []string {
	var out []string
	bad := map[string]bool{} // fields already reported
	add := func(field, problem string) {
		bad[field] = true
		out = append(out, problem+"; "+hint(field))
	}
	for _, f := range row.Faults {
		add(f.Column, fmt.Sprintf("%s %s %s", f.Column, show(f.Value), f.Problem))
	}
	if !bad["entity"] && !utf8.ValidString(row.Entity) {
		add("entity", fmt.Sprintf("entity %s is not UTF-8 text", show(row.Entity)))
	}
	if !bad["key"] && !utf8.ValidString(row.Key) {
		add("key", fmt.Sprintf("key %s is not UTF-8 text", show(row.Key)))
	}
	if !bad["occurred_at"] && !representable(row.Occurred) {
		add("occurred_at", fmt.Sprintf("occurred_at %s is outside the years 0000 to 9999 that an event's RFC 3339 time can carry",
			row.Occurred.UTC().Format(time.RFC3339Nano)))
	}
	if !bad["data"] && len(row.Data) > 0 {
		if err := json.Unmarshal(row.Data, new(json.RawMessage)); err != nil {
			add("data", fmt.Sprintf("data %s is not JSON (%v)", show(string(row.Data)), err))
		} else if !utf8.Valid(row.Data) {
			add("data", "data is not UTF-8 text")
		}
	}
	// The event contract's own rules, on the fields not reported yet.
	// Validate stops at the first problem, so each reported field gets a
	// placeholder and Validate runs again, once per field at most.
	ev := row.Event()
	for field := range bad {
		stubField(&ev, field)
	}
	for range 8 {
		err := ev.Validate()
		if err == nil {
			break
		}
		var ve *event.ValidationError
		if !errors.As(err, &ve) || bad[ve.Field] || !stubField(&ev, ve.Field) {
			out = append(out, err.Error())
			break
		}
		add(ve.Field, fmt.Sprintf("%s %s", ve.Field, strings.ReplaceAll(ve.Problem, `"`, `'`)))
	}
	if len(out) == 0 {
		// encode only calls problems for a row something is wrong with.
		out = append(out, "it does not encode as an event")
	}
	return out
}

// stubField puts a valid placeholder in ev's field, so that Validate
// looks past it; false for a field it does not know.
func stubField(ev *event.Event, field string) bool {
	switch field {
	case "id":
		ev.ID = "x"
	case "entity":
		ev.Entity = "x"
	case "key":
		ev.Key = "x"
	case "version":
		ev.Version = 1
	case "op":
		ev.Op = event.OpDelete
		ev.Data = nil
	case "data":
		ev.Data = json.RawMessage(`{}`)
	case "occurred_at":
		ev.OccurredAt = nil
	default:
		return false
	}
	return true
}

// hint says how to fix a field of an outbox row.
func hint(field string) string {
	switch field {
	case "entity":
		return "the entity must be a name the worker's sink configures, matching [a-z][a-z0-9_]*"
	case "key":
		return "the key must be the entity's id as UTF-8 text"
	case "version":
		return "the version must be a whole number of 1 or more, taken from eventsync_version_seq"
	case "op":
		return "the op must be upsert or delete"
	case "data":
		return "data must be the entity's full state as a JSON object, or NULL for a delete"
	case "occurred_at":
		return "occurred_at must be when the change happened"
	default:
		return "see the event contract in docs/events.md"
	}
}

// describe is the reason a rejected row is parked with: which row, what is
// wrong, and how to publish it again once fixed.
func describe(row source.Row, problems []string) string {
	return fmt.Sprintf("outbox row %d (entity %s, key %s) cannot be published as an event: %s. "+
		"Fix the row and set its sent_at to NULL to publish it again",
		row.ID, show(row.Entity), show(row.Key), strings.Join(problems, "; "))
}

// show renders a stored value for a reason as an SQL literal: quoted when
// it is printable text, in hex (x'FF') when it holds invalid UTF-8 or
// control characters, and cut short when long. No double quotes or
// backslashes, which the worker's parse error would escape once more.
func show(s string) string {
	const limit = 64
	cut := ""
	if len(s) > limit {
		n := limit
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], "..."
	}
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "'" + strings.ReplaceAll(s, "'", "''") + "'" + cut
	}
	return fmt.Sprintf("x'%X'", s) + cut
}

// rejected is the body published for a row that is not a valid event,
// after its first member (the reason, see rejection). It keeps the row's
// values, as stored, for whoever fixes it after the row itself has been
// cleaned up; id and entity keep their meaning, so parked-queue filters
// by entity still find it.
type rejected struct {
	ID         string `json:"id"`
	Entity     string `json:"entity"`
	Key        string `json:"key"`
	Version    any    `json:"version,omitempty"` // the number, or the stored text when it is none
	Op         string `json:"op,omitempty"`
	Data       any    `json:"data,omitempty"`        // the JSON, or the stored text when it is not JSON
	DataBase64 []byte `json:"data_base64,omitempty"` // the stored bytes when they are not UTF-8 text
	DataBytes  int    `json:"data_bytes,omitempty"`  // set when data was left out to stay under the size limit
	OccurredAt string `json:"occurred_at,omitempty"` // as stored
}

// rejection builds a JSON object whose first member's name is the reason.
// event.Parse refuses unknown members before checking anything else, so
// the worker parks the message at once with that reason, whatever else is
// wrong with the row ("invalid event: not valid JSON: json: unknown field
// "outbox row 17 (...) cannot be published as an event: ..."").
func rejection(row source.Row, reason string, maxBytes int) []byte {
	doc := rejected{ID: fmt.Sprintf("outbox-%d", row.ID), Entity: row.Entity, Key: row.Key, Op: string(row.Op)}
	if row.Version != 0 {
		doc.Version = row.Version
	}
	if !row.Occurred.IsZero() {
		doc.OccurredAt = row.Occurred.UTC().Format(time.RFC3339Nano)
	}
	for _, f := range row.Faults {
		switch f.Column {
		case "version":
			doc.Version = f.Value
		case "occurred_at":
			doc.OccurredAt = f.Value
		}
	}
	switch {
	case len(row.Data) == 0:
	case !utf8.Valid(row.Data):
		doc.DataBase64 = row.Data
	case json.Valid(row.Data):
		doc.Data = json.RawMessage(row.Data)
	default:
		doc.Data = string(row.Data)
	}
	body := rejectionBody(reason, doc)
	if len(body) > maxBytes && len(row.Data) > 0 {
		// The row keeps its data until retention; the parked copy says
		// how much there was.
		doc.Data, doc.DataBase64, doc.DataBytes = nil, nil, len(row.Data)
		body = rejectionBody(reason, doc)
	}
	if len(body) > maxBytes {
		body = rejectionBody(reason, rejected{ID: doc.ID, Entity: show(row.Entity), Key: show(row.Key), DataBytes: doc.DataBytes})
	}
	return body
}

func rejectionBody(reason string, doc rejected) []byte {
	name, _ := json.Marshal(reason) // a string always encodes
	rest, err := json.Marshal(doc)
	if err != nil {
		// Only strings and valid JSON go into doc; keep the reason anyway.
		rest = []byte(`{"id":` + strconv.Quote(doc.ID) + `}`)
	}
	body := make([]byte, 0, len(name)+len(rest)+64)
	body = append(body, '{')
	body = append(body, name...)
	body = append(body, `:"the relay could not publish this outbox row as an event; this member's name is why",`...)
	return append(body, rest[1:]...)
}
