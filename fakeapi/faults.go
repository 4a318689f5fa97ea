package fakeapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string such as "50ms" or "1m30s", so fault settings stay human-editable.
type Duration time.Duration

// MarshalJSON writes the duration as a string like "50ms".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON accepts a duration string like "250ms"; bare numbers are
// refused because their unit would be a guess.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"50ms\", got %s", truncate(string(b), 40))
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("cannot parse duration %q; use a Go duration such as \"50ms\" or \"2s\"", s)
	}
	*d = Duration(v)
	return nil
}

// Faults is the set of misbehaviours the fake API injects into /v1 requests.
// The zero value injects nothing. JSON field names are what
// PUT/GET /_admin/faults speak.
type Faults struct {
	// Latency is added to every /v1 request before it is handled.
	Latency Duration `json:"latency"`
	// Jitter adds a uniformly random extra delay in [0, Jitter).
	Jitter Duration `json:"jitter"`
	// ErrorRate is the fraction (0..1) of /v1 requests answered with a random
	// 500, 502 or 503 without doing anything.
	ErrorRate float64 `json:"error_rate"`
	// TimeoutRate is the fraction (0..1) of successful writes whose response
	// is held for TimeoutHold after the write happened: the worst case for a
	// client, whose deadline expires although its write landed.
	TimeoutRate float64 `json:"timeout_rate"`
	// TimeoutHold is how long a timed-out response is held; it should exceed
	// client deadlines. Zero means DefaultTimeoutHold.
	TimeoutHold Duration `json:"timeout_hold"`
	// RateLimit is the sustained requests per second allowed (token bucket);
	// excess requests get 429 with Retry-After. Zero disables it.
	RateLimit float64 `json:"rate_limit"`
	// Burst is the token bucket size. Zero means one second's worth of
	// RateLimit (at least 1).
	Burst int `json:"burst"`
	// MaxConcurrency is the most /v1 requests in flight before further ones
	// get 503 immediately. Zero means unlimited.
	MaxConcurrency int `json:"max_concurrency"`
	// OutageFor, when set in a PUT, starts an outage: every /v1 request gets
	// 503 with Retry-After for that long from now ("0s" ends an outage).
	// When read back it is the outage time remaining, absent when none.
	OutageFor *Duration `json:"outage_for,omitempty"`
}

// DefaultTimeoutHold is how long a timed-out response is held by default:
// longer than the usual client deadline of a few seconds.
const DefaultTimeoutHold = 30 * time.Second

// FieldError names the fault setting that is wrong, by its JSON name, so
// callers (like the CLI, which maps it to a flag) can point at it.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return fmt.Sprintf("fault %q: %s", e.Field, e.Problem) }

// Validate reports the first invalid setting as a *FieldError.
func (f Faults) Validate() error {
	rate := func(field string, v float64) error {
		if math.IsNaN(v) || v < 0 || v > 1 {
			return &FieldError{field, fmt.Sprintf("must be a fraction between 0 and 1, got %v", v)}
		}
		return nil
	}
	nonNeg := func(field string, d Duration) error {
		if d < 0 {
			return &FieldError{field, fmt.Sprintf("must not be negative, got %s", time.Duration(d))}
		}
		return nil
	}
	checks := []error{
		nonNeg("latency", f.Latency),
		nonNeg("jitter", f.Jitter),
		rate("error_rate", f.ErrorRate),
		rate("timeout_rate", f.TimeoutRate),
		nonNeg("timeout_hold", f.TimeoutHold),
	}
	if f.OutageFor != nil {
		checks = append(checks, nonNeg("outage_for", *f.OutageFor))
	}
	if math.IsNaN(f.RateLimit) || math.IsInf(f.RateLimit, 0) || f.RateLimit < 0 {
		checks = append(checks, &FieldError{"rate_limit", fmt.Sprintf("must be requests per second >= 0 (0 disables), got %v", f.RateLimit)})
	}
	if f.Burst < 0 {
		checks = append(checks, &FieldError{"burst", fmt.Sprintf("must be >= 0 (0 means one second's worth of rate_limit), got %d", f.Burst)})
	}
	if f.MaxConcurrency < 0 {
		checks = append(checks, &FieldError{"max_concurrency", fmt.Sprintf("must be >= 0 (0 means unlimited), got %d", f.MaxConcurrency)})
	}
	return errors.Join(checks...)
}

// WithDefaults fills in the zero values that have a default.
func (f Faults) WithDefaults() Faults {
	if f.TimeoutHold == 0 {
		f.TimeoutHold = Duration(DefaultTimeoutHold)
	}
	if f.RateLimit > 0 && f.Burst == 0 {
		f.Burst = max(1, int(math.Ceil(f.RateLimit)))
	}
	return f
}

// ParseFaults decodes a faults document on top of base: fields absent from
// data keep base's value, so {"error_rate":0.1} changes only the error rate.
// Unknown fields and trailing data are errors, and the result is validated.
func ParseFaults(data []byte, base Faults) (Faults, error) {
	f := base
	f.OutageFor = nil // an outage starts only when the document asks for one
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Faults{}, fmt.Errorf("decode faults JSON: %w; expected an object like {\"latency\":\"50ms\",\"error_rate\":0.1}", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Faults{}, errors.New("decode faults JSON: unexpected data after the object; send exactly one JSON object")
	}
	if err := f.Validate(); err != nil {
		return Faults{}, err
	}
	return f, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
