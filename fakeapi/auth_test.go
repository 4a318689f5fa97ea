package fakeapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/eventsync/eventsync/internal/hmacsig"
)

func TestAuthOAuth2(t *testing.T) {
	srv, err := New(Config{Auth: Auth{OAuth2: &OAuth2Auth{ClientID: "id", ClientSecret: "sec", TokenLifetime: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+"/v1/listings", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(""); got != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", got)
	}
	cc := clientcredentials.Config{ClientID: "id", ClientSecret: "sec", TokenURL: ts.URL + TokenPath}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := get(tok.AccessToken); got != http.StatusOK {
		t.Fatalf("fresh token: %d, want 200", got)
	}
	srv.ExpireTokens()
	if got := get(tok.AccessToken); got != http.StatusUnauthorized {
		t.Fatalf("expired token: %d, want 401", got)
	}
	bad := clientcredentials.Config{ClientID: "id", ClientSecret: "wrong", TokenURL: ts.URL + TokenPath}
	if _, err := bad.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("wrong secret: %v, want invalid_client", err)
	}
	if st := srv.Stats(); st.TokensIssued != 1 || st.AuthFailures < 3 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestAuthHMAC(t *testing.T) {
	srv, err := New(Config{Auth: Auth{HMAC: &HMACAuth{Secret: "k", Header: "X-Sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	post := func(secret string, at time.Time) int {
		body := `{"external_id":"a","version":1}`
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/listings", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(hmacsig.DefaultTimestampHeader, strconv.FormatInt(at.Unix(), 10))
		req.Header.Set("X-Sig", hmacsig.Sign([]byte(secret), "POST", "/v1/listings", at.Unix(), []byte(body)))
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("k", time.Now()); got != http.StatusCreated {
		t.Fatalf("signed: %d, want 201", got)
	}
	if got := post("other", time.Now()); got != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d, want 401", got)
	}
	if got := post("k", time.Now().Add(-time.Hour)); got != http.StatusUnauthorized {
		t.Fatalf("replayed an hour later: %d, want 401", got)
	}
	if len(srv.Records("listings")) != 1 {
		t.Fatalf("records: %v", srv.Records("listings"))
	}
}

func TestAuthValidate(t *testing.T) {
	for _, a := range []Auth{{OAuth2: &OAuth2Auth{ClientID: "x"}}, {HMAC: &HMACAuth{}}} {
		if _, err := New(Config{Auth: a}); err == nil {
			t.Errorf("New(%+v) accepted", a)
		}
	}
}
