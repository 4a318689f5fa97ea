package fakeapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eventsync/eventsync/internal/hmacsig"
)

// FuzzAuth sends the fake API in OAuth2 and HMAC mode arbitrary token
// requests and /v1 requests with arbitrary credentials. Nothing panics; the
// token endpoint answers JSON; a /v1 request gets past authentication only
// with a token the endpoint issued and a signature of its own bytes.
func FuzzAuth(f *testing.F) {
	f.Add("grant_type=client_credentials&client_id=id&client_secret=sec", "Bearer x", "1700000000", "00", []byte(`{"external_id":"k"}`), true)
	f.Add("grant_type=password", "Bearer", "", "", []byte(nil), false)
	f.Add("%zz", "Basic aWQ6c2Vj", "-1", "zz", []byte(`[`), true)
	f.Fuzz(func(t *testing.T, form, authz, ts, sig string, body []byte, sign bool) {
		s, err := New(Config{Seed: 1, Logger: slog.New(slog.DiscardHandler), Auth: Auth{
			OAuth2: &OAuth2Auth{ClientID: "id", ClientSecret: "sec"},
			HMAC:   &HMACAuth{Secret: "k"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		r := httptest.NewRequest(http.MethodPost, TokenPath, strings.NewReader(form))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil {
			t.Fatalf("token endpoint answered %d %q", w.Code, w.Body.Bytes())
		}
		issued := w.Code == http.StatusOK
		if issued != (tok.AccessToken != "") {
			t.Fatalf("status %d with token %q", w.Code, tok.AccessToken)
		}
		r = httptest.NewRequest(http.MethodPost, "/v1/items", bytes.NewReader(body))
		if issued && strings.HasPrefix(authz, "Bearer") {
			authz = "Bearer " + tok.AccessToken
		}
		r.Header.Set("Authorization", authz)
		if sign {
			now := time.Now().Unix()
			ts, sig = strconv.FormatInt(now, 10), hmacsig.Sign([]byte("k"), http.MethodPost, "/v1/items", now, body)
		}
		r.Header.Set(hmacsig.DefaultTimestampHeader, ts)
		r.Header.Set(hmacsig.DefaultHeader, sig)
		w = httptest.NewRecorder()
		s.Handler().ServeHTTP(w, r)
		authorized := issued && authz == "Bearer "+tok.AccessToken && sign
		if (w.Code == http.StatusUnauthorized) == authorized {
			t.Fatalf("authorized %v, status %d %s", authorized, w.Code, w.Body.Bytes())
		}
	})
}
