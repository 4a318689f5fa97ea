package fakeapi

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/eventsync/eventsync/internal/hmacsig"
)

// TokenPath is the OAuth2 token endpoint served when Auth.OAuth2 is set.
const TokenPath = "/oauth/token"

// DefaultTokenLifetime is the lifetime of an issued token unless
// OAuth2Auth.TokenLifetime says otherwise.
const DefaultTokenLifetime = time.Hour

// Auth makes /v1 require credentials; the zero value requires none.
type Auth struct {
	// OAuth2, when set, requires "Authorization: Bearer <token>" with a
	// token from POST /oauth/token (client credentials grant).
	OAuth2 *OAuth2Auth
	// HMAC, when set, requires an HMAC-SHA256 signature (internal/hmacsig).
	HMAC *HMACAuth
}

// OAuth2Auth is the client the token endpoint accepts.
type OAuth2Auth struct {
	ClientID, ClientSecret string
	// TokenLifetime is how long an issued token is accepted (expires_in);
	// a short one makes tokens expire in the middle of a run.
	TokenLifetime time.Duration
}

// HMACAuth is the shared secret and the headers of request signatures.
type HMACAuth struct {
	Secret string
	// Header carries the signature; default X-Signature.
	Header string
	// TimestampHeader carries the signed Unix time; default
	// X-Signature-Timestamp. Timestamps more than 5 minutes away are refused.
	TimestampHeader string
}

// tokens are the bearer tokens issued by the token endpoint.
type tokens struct {
	mu      sync.Mutex
	expires map[string]time.Time
}

// ExpireTokens makes every issued token expired at once, as if their
// lifetime had run out (POST /_admin/expire-tokens).
func (s *Server) ExpireTokens() {
	s.tokens.mu.Lock()
	defer s.tokens.mu.Unlock()
	now := time.Now()
	for t := range s.tokens.expires {
		s.tokens.expires[t] = now
	}
}

// serveToken is the client credentials grant: the client's id and secret
// in HTTP Basic auth or in the form.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	o := s.cfg.Auth.OAuth2
	if r.Method != http.MethodPost {
		writeError(w, http.StatusMethodNotAllowed, "POST a client_credentials grant")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(o.ClientID)) != 1 || subtle.ConstantTimeCompare([]byte(secret), []byte(o.ClientSecret)) != 1 {
		s.counters.authFailures.Add(1)
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	tok := hex.EncodeToString(raw[:])
	life := o.TokenLifetime
	if life <= 0 {
		life = DefaultTokenLifetime
	}
	s.tokens.mu.Lock()
	if s.tokens.expires == nil {
		s.tokens.expires = make(map[string]time.Time)
	}
	now := time.Now()
	for t, exp := range s.tokens.expires { // forget long-expired tokens
		if now.After(exp.Add(time.Minute)) {
			delete(s.tokens.expires, t)
		}
	}
	s.tokens.expires[tok] = now.Add(life)
	s.tokens.mu.Unlock()
	s.counters.tokensIssued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": tok, "token_type": "Bearer",
		"expires_in": max(1, int(life.Round(time.Second)/time.Second)),
	})
}

func writeOAuthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

// checkAuth answers 401 and returns false when a /v1 request lacks the
// credentials Config.Auth requires.
func (s *Server) checkAuth(w http.ResponseWriter, r *http.Request) bool {
	a := s.cfg.Auth
	if o := a.OAuth2; o != nil {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.tokens.mu.Lock()
		exp, known := s.tokens.expires[strings.TrimSpace(tok)]
		s.tokens.mu.Unlock()
		switch {
		case !ok || !known:
			s.unauthorized(w, `Bearer error="invalid_token"`, "missing or unknown bearer token")
			return false
		case time.Now().After(exp):
			s.counters.tokensExpired.Add(1)
			s.unauthorized(w, `Bearer error="invalid_token", error_description="expired"`, "bearer token expired")
			return false
		}
	}
	if h := a.HMAC; h != nil {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "read body: "+err.Error())
			return false
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		header, tsHeader := h.Header, h.TimestampHeader
		if header == "" {
			header = hmacsig.DefaultHeader
		}
		if tsHeader == "" {
			tsHeader = hmacsig.DefaultTimestampHeader
		}
		if err := hmacsig.Verify([]byte(h.Secret), r.Method, r.URL.RequestURI(), r.Header.Get(tsHeader), r.Header.Get(header), body, time.Now(), hmacsig.DefaultMaxSkew); err != nil {
			s.unauthorized(w, `HMAC-SHA256`, fmt.Sprintf("%s: %v", header, err))
			return false
		}
	}
	return true
}

func (s *Server) unauthorized(w http.ResponseWriter, challenge, msg string) {
	s.counters.authFailures.Add(1)
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, http.StatusUnauthorized, msg)
}

// validate reports an Auth that no client could satisfy.
func (a Auth) validate() error {
	if o := a.OAuth2; o != nil && (o.ClientID == "" || o.ClientSecret == "") {
		return fmt.Errorf("oauth2 needs a client id and a client secret")
	}
	if h := a.HMAC; h != nil && h.Secret == "" {
		return fmt.Errorf("hmac needs a secret")
	}
	return nil
}
