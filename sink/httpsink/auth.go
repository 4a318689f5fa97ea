package httpsink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/eventsync/eventsync/internal/hmacsig"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/sink"
)

// AuthConfig is how the sink authenticates to the API beyond static
// headers: an OAuth2 client-credentials token, an HMAC-SHA256 request
// signature, or both. YAML key "auth" of the sink section.
type AuthConfig struct {
	OAuth2 *OAuth2Config `yaml:"oauth2"`
	HMAC   *HMACConfig   `yaml:"hmac"`
}

// OAuth2Config is an OAuth2 client-credentials grant (RFC 6749 §4.4). The
// token is fetched on first use, cached until shortly before it expires,
// shared by every call, and fetched again once when the API answers 401.
// ClientID and ClientSecret may reference ${NAME} (from NAME or the file
// named by NAME_FILE) like header values.
type OAuth2Config struct {
	TokenURL     string   `yaml:"token_url"`
	ClientID     string   `yaml:"client_id"`
	ClientSecret string   `yaml:"client_secret"`
	Scopes       []string `yaml:"scopes"`
}

// HMACConfig signs every request with HMAC-SHA256 over its method, request
// URI, a timestamp and the SHA-256 of its body (docs/security.md, "Request
// signing"). Secret may reference ${NAME} like header values.
type HMACConfig struct {
	Secret string `yaml:"secret"`
	// Header carries the hex signature; default X-Signature.
	Header string `yaml:"header"`
	// TimestampHeader carries the signed Unix time in seconds; default
	// X-Signature-Timestamp.
	TimestampHeader string `yaml:"timestamp_header"`
}

// authenticator adds the configured credentials to each request.
type authenticator struct {
	tokens *tokenCache // nil without oauth2
	hmac   *hmacSigner // nil without hmac
}

type hmacSigner struct {
	secret           []byte
	header, tsHeader string
	now              func() time.Time
}

// compileAuth checks the auth section and, when lookupEnv is given,
// expands its ${NAME} references into a ready authenticator.
func compileAuth(a AuthConfig, lookupEnv func(string) (string, bool)) (*authenticator, []error) {
	var errs []error
	add := func(where, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sink.auth.%s: %s", where, fmt.Sprintf(format, args...)))
	}
	expand := func(where, v string) string {
		if v == "" {
			add(where, "required")
			return ""
		}
		v, err := expandEnv("sink.auth."+where, v, lookupEnv)
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	out := &authenticator{}
	if o := a.OAuth2; o != nil {
		if u, err := url.Parse(o.TokenURL); o.TokenURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("oauth2.token_url", "%q is not an http:// or https:// URL; set the API's token endpoint, e.g. https://auth.example.com/oauth/token", redact.URL(o.TokenURL))
		}
		cc := &clientcredentials.Config{
			TokenURL:     o.TokenURL,
			ClientID:     expand("oauth2.client_id", o.ClientID),
			ClientSecret: expand("oauth2.client_secret", o.ClientSecret),
			Scopes:       o.Scopes,
		}
		out.tokens = &tokenCache{cc: cc, now: time.Now}
	}
	if h := a.HMAC; h != nil {
		s := &hmacSigner{
			secret:   []byte(expand("hmac.secret", h.Secret)),
			header:   http.CanonicalHeaderKey(firstNonEmpty(h.Header, hmacsig.DefaultHeader)),
			tsHeader: http.CanonicalHeaderKey(firstNonEmpty(h.TimestampHeader, hmacsig.DefaultTimestampHeader)),
			now:      time.Now,
		}
		for where, name := range map[string]string{"hmac.header": s.header, "hmac.timestamp_header": s.tsHeader} {
			if !headerNamePattern.MatchString(name) {
				add(where, "%q is not a valid HTTP header name", name)
			}
		}
		if s.header == s.tsHeader {
			add("hmac.timestamp_header", "%q is also the signature header; pick another name", h.TimestampHeader)
		}
		out.hmac = s
	}
	if out.tokens == nil && out.hmac == nil {
		return nil, errs
	}
	return out, errs
}

// secrets are the values to keep out of logs and error excerpts.
func (a *authenticator) secrets() []string {
	var out []string
	if a.tokens != nil {
		out = append(out, a.tokens.cc.ClientSecret)
	}
	if a.hmac != nil {
		out = append(out, string(a.hmac.secret))
	}
	return out
}

// apply sets the bearer token and the signature on req; it returns the
// token used, for invalidate after a 401.
func (a *authenticator) apply(ctx context.Context, client *http.Client, req *http.Request, body []byte) (*oauth2.Token, error) {
	var tok *oauth2.Token
	if a.tokens != nil {
		var err error
		if tok, err = a.tokens.token(ctx, client); err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	}
	if s := a.hmac; s != nil {
		ts := s.now().Unix()
		req.Header.Set(s.tsHeader, strconv.FormatInt(ts, 10))
		req.Header.Set(s.header, hmacsig.Sign(s.secret, req.Method, req.URL.RequestURI(), ts, body))
	}
	return tok, nil
}

// refusedHint is what a 401 after the configured credentials means.
func (a *authenticator) refusedHint() string {
	switch {
	case a.tokens != nil && a.hmac != nil:
		return "the API refused the credentials (a fresh OAuth2 token was tried): check sink.auth.oauth2 (client_id, client_secret, scopes) and sink.auth.hmac (secret, header, timestamp_header)"
	case a.tokens != nil:
		return "the API refused a freshly fetched OAuth2 token: check sink.auth.oauth2.scopes and that sink.auth.oauth2.token_url issues tokens for this API"
	default:
		return "the API refused the request signature: check sink.auth.hmac.secret (and header, timestamp_header)"
	}
}

// tokenCache holds the current token; one fetch at a time, shared by
// every caller.
type tokenCache struct {
	cc  *clientcredentials.Config
	now func() time.Time

	mu      sync.Mutex
	tok     *oauth2.Token
	refresh time.Time // fetch a new token from this moment
}

// token returns the cached token, fetching one when there is none or it
// is about to expire.
func (c *tokenCache) token(ctx context.Context, client *http.Client) (*oauth2.Token, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.tok != nil && now.Before(c.refresh) {
		return c.tok, nil
	}
	tok, err := c.cc.Token(context.WithValue(ctx, oauth2.HTTPClient, client))
	if err != nil {
		return nil, tokenError(c.cc.TokenURL, err)
	}
	c.tok, c.refresh = tok, refreshAt(now, tok.Expiry)
	return tok, nil
}

// refreshAt is when a token fetched at now and expiring at expiry should
// be replaced: a tenth of its lifetime (at most 30 s) before it expires,
// so calls in flight do not carry a token that runs out under them. A
// token without an expiry is kept until the API refuses it.
func refreshAt(now, expiry time.Time) time.Time {
	if expiry.IsZero() {
		return now.Add(100 * 365 * 24 * time.Hour)
	}
	return expiry.Add(-min(expiry.Sub(now)/10, 30*time.Second))
}

// invalidate drops tok, if it is still the cached one, so the next call
// fetches a new token.
func (c *tokenCache) invalidate(tok *oauth2.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok == tok {
		c.tok = nil
	}
}

// tokenError classifies a failed token fetch: a refusal of the client
// (400, 401, 403) is permanent and names the settings, anything else
// (5xx, 429, the endpoint unreachable) is retried.
func tokenError(tokenURL string, err error) error {
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) && rerr.Response != nil {
		status := rerr.Response.StatusCode
		if !sink.ClassifyStatus(status) {
			return &sink.Error{Op: "token", Err: fmt.Errorf("the token endpoint %s refused the client (HTTP %d %s): check sink.auth.oauth2.client_id, client_secret and scopes", redact.URL(tokenURL), status, rerr.ErrorCode)}
		}
		return &sink.Error{Op: "token", Retryable: true, Err: fmt.Errorf("the token endpoint %s answered HTTP %d: %w", redact.URL(tokenURL), status, err)}
	}
	return &sink.Error{Op: "token", Retryable: true, Err: fmt.Errorf("fetch a token from %s (sink.auth.oauth2.token_url): %w", redact.URL(tokenURL), err)}
}

// send does req with the configured credentials. With OAuth2, a 401 drops
// the token it carried and the request goes once more with a fresh one:
// a token the API revoked, or that expired in flight, costs one retry
// inside the call instead of a failed event.
func (s *Sink) send(ctx context.Context, req *http.Request, body []byte) (*http.Response, error) {
	if s.auth == nil {
		return s.client.Do(req)
	}
	tok, err := s.auth.apply(ctx, s.client, req, body)
	if err != nil {
		return nil, s.secrets.Error(err)
	}
	resp, err := s.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || tok == nil {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	s.auth.tokens.invalidate(tok)
	retry := req.Clone(ctx)
	if body != nil {
		retry.Body = io.NopCloser(bytes.NewReader(body))
	}
	if _, err := s.auth.apply(ctx, s.client, retry, body); err != nil {
		return nil, s.secrets.Error(err)
	}
	return s.client.Do(retry)
}

// scrubToken masks in text the OAuth2 token req carried (an API that
// echoes the token it refused): tokens are fetched at run time, so the
// sink's scrubber, built at start, does not know them.
func scrubToken(text string, req *http.Request) string {
	if req == nil {
		return text
	}
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok || len(tok) < 8 {
		return text
	}
	return strings.ReplaceAll(text, tok, redact.Mask)
}
