// Package hmacsig is the HMAC-SHA256 request signature the HTTP sink sends
// and the fake API checks (docs/security.md, "Request signing").
//
// The signed string is five lines joined by "\n":
//
//	eventsync-hmac-sha256-v1
//	METHOD                      (upper case, e.g. PUT)
//	/path?query                 (the request URI as sent, query included)
//	TIMESTAMP                   (Unix seconds, also sent in the timestamp header)
//	hex(SHA-256(body))          (of the empty string when there is no body)
//
// The signature header carries hex(HMAC-SHA256(secret, string)). The
// timestamp binds the signature to a moment, so a receiver that refuses
// timestamps older than a few minutes refuses replays.
package hmacsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults of the header names and of the tolerated clock skew.
const (
	DefaultHeader          = "X-Signature"
	DefaultTimestampHeader = "X-Signature-Timestamp"
	DefaultMaxSkew         = 5 * time.Minute
	version                = "eventsync-hmac-sha256-v1"
)

// StringToSign is the signed string of one request.
func StringToSign(method, requestURI string, ts int64, body []byte) string {
	sum := sha256.Sum256(body)
	return strings.Join([]string{version, strings.ToUpper(method), requestURI, strconv.FormatInt(ts, 10), hex.EncodeToString(sum[:])}, "\n")
}

// Sign returns the hex HMAC-SHA256 of the request's signed string.
func Sign(secret []byte, method, requestURI string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(StringToSign(method, requestURI, ts, body)))
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrTimestamp = errors.New("signature timestamp missing, malformed or outside the allowed skew")
	ErrSignature = errors.New("signature does not match")
)

// ParseTimestamp parses a timestamp header value (decimal Unix seconds).
func ParseTimestamp(v string) (int64, error) {
	if v == "" || len(v) > 19 {
		return 0, fmt.Errorf("%w: %q", ErrTimestamp, v)
	}
	ts, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ts < 0 {
		return 0, fmt.Errorf("%w: %q", ErrTimestamp, v)
	}
	return ts, nil
}

// Verify checks a request's signature and timestamp header values against
// secret; now and maxSkew bound the timestamp (a replay older than maxSkew
// is refused).
func Verify(secret []byte, method, requestURI, tsHeader, sigHeader string, body []byte, now time.Time, maxSkew time.Duration) error {
	ts, err := ParseTimestamp(tsHeader)
	if err != nil {
		return err
	}
	if d := now.Unix() - ts; d > int64(maxSkew/time.Second) || -d > int64(maxSkew/time.Second) {
		return fmt.Errorf("%w: %d is %ds from now", ErrTimestamp, ts, d)
	}
	want := Sign(secret, method, requestURI, ts, body)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(strings.TrimSpace(sigHeader)))) {
		return ErrSignature
	}
	return nil
}
