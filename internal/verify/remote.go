package verify

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/sink"
)

// FakeAPIDump lists a fake API collection through its admin dump
// (GET /_admin/records/{collection}, NDJSON in creation order): one request
// instead of thousands of pages, so a million records list in seconds.
type FakeAPIDump struct {
	// BaseURL of the fake API, e.g. http://127.0.0.1:8081.
	BaseURL string
	// Collections maps an entity to its collection; an entity missing here
	// uses its name plus "s" ("listing" → "listings").
	Collections map[string]string
	// Client defaults to a client without a total timeout (the dump of a
	// large collection takes a while); ctx bounds the call.
	Client *http.Client
	// MaxLineBytes bounds one record; default 4 MiB.
	MaxLineBytes int
}

var _ sink.Lister = FakeAPIDump{}

// Collection returns the collection verify reads for entity.
func (f FakeAPIDump) Collection(entity string) string {
	if c, ok := f.Collections[entity]; ok && c != "" {
		return c
	}
	return entity + "s"
}

// List implements sink.Lister.
func (f FakeAPIDump) List(ctx context.Context, entity string, fn func(sink.RemoteRecord) error) error {
	coll := f.Collection(entity)
	target := strings.TrimRight(f.BaseURL, "/") + "/_admin/records/" + url.PathEscape(coll)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return setting.Errorf("verify.fakeapi", "fake API dump %s: %w (want the fake API's base URL, e.g. http://127.0.0.1:8081)", target, err)
	}
	client := f.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second, Proxy: http.ProxyFromEnvironment}}
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
	if err != nil {
		return setting.Errorf("verify.fakeapi", "fake API dump %s: %w; is \"eventsync fakeapi\" running there?", target, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return setting.Errorf("verify.fakeapi", "fake API dump %s: HTTP %d %s: %s; is this an eventsync fake API? another API is listed through a sink with a list endpoint",
			target, resp.StatusCode, http.StatusText(resp.StatusCode), strings.TrimSpace(string(body)))
	}
	if err := ReadRecordDump(resp.Body, f.MaxLineBytes, fn); err != nil {
		return fmt.Errorf("fake API dump %s: %w", target, err)
	}
	return nil
}

// ReadRecordDump parses an NDJSON stream of remote records (JSON objects
// with a string "id" and, normally, a string "external_id") and calls fn
// for each. Numbers are kept exact (json.Number). A malformed line is an
// error naming its line number.
func ReadRecordDump(r io.Reader, maxLineBytes int, fn func(sink.RemoteRecord) error) error {
	if maxLineBytes <= 0 {
		maxLineBytes = 4 << 20
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes+1)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Bytes()
		if len(strings.TrimSpace(string(raw))) == 0 {
			continue
		}
		fields, err := decodeObject(raw)
		if err != nil {
			return fmt.Errorf("record line %d: %v", line, err)
		}
		rec := sink.RemoteRecord{Fields: fields}
		switch id := fields["id"].(type) {
		case string:
			rec.RemoteID = id
		default:
			return fmt.Errorf("record line %d: no string \"id\" field", line)
		}
		if ext, ok := fields["external_id"]; ok && ext != nil {
			switch ext := ext.(type) {
			case string:
				rec.Key = ext
			default:
				return fmt.Errorf("record %s (line %d): \"external_id\" is not a string", strconv.Quote(rec.RemoteID), line)
			}
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("record line %d: longer than %d bytes", line+1, maxLineBytes)
		}
		return fmt.Errorf("read record line %d: %w", line+1, err)
	}
	return nil
}
