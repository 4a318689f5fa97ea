package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// poster sends one event to the API the way eventsync's HTTP sink does by
// default: POST {collection} with the event's data plus "external_id" (the
// key) and "version". It keeps no state: no lease, no version check, no
// remote id.
type poster struct {
	url    string
	client *http.Client
}

func newPoster(url string, concurrency int) *poster {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// net/http keeps 2 idle connections per host by default; with more
	// callers than that every burst would open and close connections.
	tr.MaxIdleConns = concurrency
	tr.MaxIdleConnsPerHost = concurrency
	return &poster{url: url, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// event is the part of an eventsync event the body needs.
type event struct {
	Key     string          `json:"key"`
	Version int64           `json:"version"`
	Data    json.RawMessage `json:"data"`
}

// body returns data with external_id and version spliced in after its
// opening brace: one parse of the event, no map round trip.
func body(raw []byte) ([]byte, error) {
	var e event
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	data := bytes.TrimSpace(e.Data)
	if len(data) < 2 || data[0] != '{' {
		return nil, errors.New("event data is not an object")
	}
	key, err := json.Marshal(e.Key)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(data)+len(key)+40)
	b = append(b, `{"external_id":`...)
	b = append(b, key...)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, e.Version, 10)
	if rest := bytes.TrimSpace(data[1:]); len(rest) > 0 && rest[0] != '}' {
		b = append(b, ',')
	}
	return append(b, data[1:]...), nil
}

// post sends one event and fails unless the API answers 2xx.
func (p *poster) post(ctx context.Context, raw []byte) error {
	b, err := body(raw)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Drained so the connection goes back to the pool.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s", p.url, resp.Status)
	}
	return nil
}
