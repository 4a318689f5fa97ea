package redact

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{"postgres://alice:s3cret@db:5432/app", "postgres://alice:xxxxx@db:5432/app"},
		{"postgres://alice@db:5432/app", "postgres://alice@db:5432/app"},
		{"postgres://db/app?sslmode=verify-full&password=qpw&sslpassword=kpw", "postgres://db/app?sslmode=verify-full&password=xxxxx&sslpassword=xxxxx"},
		{"postgres://alice:p@ss@db/app", "postgres://alice:xxxxx@db/app"},
		{"postgres://alice:pa/ss@db/app", "postgres://xxxxx@db/app"},
		{"postgres://alice:pa?ss@db/app", "postgres://xxxxx@db/app"},
		{"postgres://alice:12#ss@db/app", "postgres://xxxxx@db/app"},
		{"postgres://db/app?password=p@ss", "postgres://xxxxx"},
		{"postgres://db/app?Pass%77ord=qpw", "postgres://db/app?Pass%77ord=xxxxx"},
		{"nats://TOKEN123@127.0.0.1:4222", "nats://xxxxx@127.0.0.1:4222"},
		{"nats://alice:TOPSECRET1@127.0.0.1:4222", "nats://alice:xxxxx@127.0.0.1:4222"},
		{"tls://TOKEN123@127.0.0.1:4222", "tls://xxxxx@127.0.0.1:4222"},
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps://guest@127.0.0.1:5671/%2F", "amqps://guest@127.0.0.1:5671/%2F"},
		{"redis://:pw123@127.0.0.1:6379/0", "redis://:xxxxx@127.0.0.1:6379/0"},
		{"redis://pw123@127.0.0.1:6379/0", "redis://xxxxx@127.0.0.1:6379/0"},
		{"https://api.example.com/v1?api_key=K123&x=1&access_token=T", "https://api.example.com/v1?api_key=xxxxx&x=1&access_token=xxxxx"},
		{"host=db user=alice password='se cr\\'et' dbname=app sslpassword=kpw", "host=db user=alice password=xxxxx dbname=app sslpassword=xxxxx"},
		{"host=db password = spaced dbname=app", "host=db password = xxxxx dbname=app"},
		{"alice:secret@db:5432", "xxxxx@db:5432"},
		{"sqlite:///tmp/app.db", "sqlite:///tmp/app.db"},
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"", ""},
	} {
		if got := URL(c.raw); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.raw, got, c.want)
		}
	}
}

func TestSecretKey(t *testing.T) {
	for _, k := range []string{"password", "sslpassword", "PASSWORD", "token", "access_token", "api_key", "X-Api-Key", "Authorization", "Proxy-Authorization", "Cookie", "client_secret", "key", "sig", "X-Signature"} {
		if !SecretKey(k) {
			t.Errorf("SecretKey(%q) = false", k)
		}
	}
	for _, k := range []string{"sslmode", "user", "dbname", "host", "pool_max_conns", "Accept", "Content-Type", "autopipeline"} {
		if SecretKey(k) {
			t.Errorf("SecretKey(%q) = true", k)
		}
	}
	if Header("Authorization", "Bearer abc") != Mask || Header("Accept", "application/json") != "application/json" {
		t.Error("Header")
	}
}

func TestScrubberForms(t *testing.T) {
	s := NewScrubber("postgres://alice:p@ss w\"rd/x@db/app", "nats://TOKEN123@h:4222").AddValues("Bearer api-token-1")
	for _, text := range []string{
		"failed: password p@ss w\"rd/x rejected",
		fmt.Sprintf("dial %q", "p@ss w\"rd/x"),
		"url " + url.QueryEscape("p@ss w\"rd/x"),
		"url " + url.PathEscape("p@ss w\"rd/x"),
		"json {\"p\":\"p@ss w\\\"rd/x\"}",
		"nats: authorization violation for TOKEN123",
		"header Bearer api-token-1",
	} {
		out := s.String(text)
		for _, secret := range []string{"p@ss", "rd/x", "TOKEN123", "api-token-1", "ss w"} {
			if strings.Contains(out, secret) {
				t.Errorf("String(%q) = %q keeps %q", text, out, secret)
			}
		}
	}
	h := (&Scrubber{}).AddHeader("Authorization", "Bearer tok-123456").AddHeader("Accept", "application/json")
	if out := h.String("echo: tok-123456, Bearer tok-123456, application/json, Bearer"); out != "echo: xxxxx, xxxxx, application/json, Bearer" {
		t.Errorf("AddHeader: %q", out)
	}
	var zero *Scrubber
	if zero.String("abc") != "abc" {
		t.Error("nil scrubber changed text")
	}
}

func TestErrorKeepsChain(t *testing.T) {
	base := fmt.Errorf("connect to nats://alice:TOPSECRET1@127.0.0.1:1: %w", fs.ErrNotExist)
	err := Error(base, "nats://alice:TOPSECRET1@127.0.0.1:1")
	if strings.Contains(err.Error(), "TOPSECRET1") || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v", err)
	}
	if Error(nil, "x") != nil {
		t.Fatal("nil error not nil")
	}
	clean := errors.New("nothing secret")
	if Error(clean, "nats://alice:TOPSECRET1@h") != clean {
		t.Fatal("an error without secrets must come back as is")
	}
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	raw := "redis://:TOPSECRET1@127.0.0.1:1/0"
	log := Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), raw)
	log = Logger(log, "nats://TOKEN123@h") // a second layer merges into the first
	log = log.With("url", raw).WithGroup("g")
	log.Debug("dial "+raw, "err", errors.New("auth TOPSECRET1 refused"), "v", stringer{"TOKEN123"},
		slog.Group("inner", "u", raw), "n", 3)
	out := buf.String()
	if strings.Contains(out, "TOPSECRET1") || strings.Contains(out, "TOKEN123") || !strings.Contains(out, "n=3") {
		t.Fatalf("log leaks or lost attrs: %s", out)
	}
	if strings.Count(out, "xxxxx") < 5 {
		t.Fatalf("expected masks: %s", out)
	}
}

// leaks reports whether out shows secret, when that cannot be the
// mask's letters or a too short coincidence.
func leaks(out, secret string) bool {
	return len(secret) >= 2 && !strings.ContainsRune(secret, 'x') && strings.Contains(out, secret)
}

// FuzzURL builds URLs that carry a secret in every position (password,
// written raw or escaped; token user name; query value) around other
// fuzzed parts, and checks the redacted URL never shows it.
func FuzzURL(f *testing.F) {
	f.Add("postgres", "alice", "p@ss/w?rd#1", "db:5432", "/app", "sslmode=require", uint8(0))
	f.Add("nats", "", "TOKEN123", "127.0.0.1:4222", "", "", uint8(1))
	f.Add("postgres", "u", "qpw", "h", "/d", "a=b", uint8(2))
	f.Add("amqp", "guest", "gu@st", "h:5672", "/%2F", "heartbeat=10", uint8(3))
	f.Add("redis", "", "p:w", "h:6379", "/0", "password=other", uint8(0))
	f.Fuzz(func(t *testing.T, scheme, user, secret, host, path, query string, shape uint8) {
		if !validScheme(scheme) {
			scheme = "postgres"
		}
		// A user name with ':' or a host with '@' moves the password.
		user = strings.NewReplacer(":", "", "@", "").Replace(user)
		host = strings.ReplaceAll(host, "@", "")
		if path != "" && path[0] != '/' { // else it is part of the host
			path = "/" + path
		}
		build := func(secret string) string {
			var raw string
			switch shape % 5 {
			case 0: // password as written, unescaped
				raw = scheme + "://" + user + ":" + secret + "@" + host + path
			case 1: // token-only user name, as nats reads it
				if strings.ContainsAny(secret, ":@/?#") {
					return "" // not a user name alone
				}
				scheme = "nats"
				raw = "nats://" + secret + "@" + host + path
			case 2: // secret query parameter, escaped
				raw = scheme + "://" + host + path + "?password=" + url.QueryEscape(secret)
			case 3: // password escaped as url.UserPassword does
				raw = scheme + "://" + url.UserPassword(user, secret).String() + "@" + host + path
			case 4: // key=value DSN
				raw = "host=" + strconv.Quote(host) + " password='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(secret) + "' dbname=app"
				if strings.ContainsAny(host, " \t\r\n\v\f'\\") {
					return ""
				}
			}
			if query != "" && shape%5 != 4 {
				sep := "?"
				if shape%5 == 2 {
					sep = "&"
				}
				raw += sep + query
			}
			return raw
		}
		raw, skeleton := build(secret), build("\x00")
		if raw == "" {
			return
		}
		out := URL(raw)
		for _, form := range []string{secret, url.QueryEscape(secret), url.PathEscape(secret)} {
			// The parts around the secret, as written and as redacted
			// (Redacted escapes anew), may show the same text.
			if !strings.Contains(skeleton, form) && !strings.Contains(URL(skeleton), form) && leaks(out, form) {
				t.Fatalf("URL(%q) = %q shows the secret %q", raw, out, form)
			}
		}
		s := NewScrubber(raw)
		if text := "error: " + raw + " " + secret; strings.Contains(s.String(text), secret) && len(secret) >= minScrub && !strings.Contains(Mask, secret) {
			t.Fatalf("Scrubber(%q) keeps %q in %q", raw, secret, s.String(text))
		}
	})
}

// FuzzURLAnyInput: whatever the string, URL and Secrets agree (no secret
// found is shown) and nothing panics.
func FuzzURLAnyInput(f *testing.F) {
	for _, s := range []string{"postgres://a:b@c/d?password=e", "host=a password='b c' x", "nats://t@h", "::://@@?&=#", "a=b=c 'd", "x://%zz@h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out, secrets := analyze(raw)
		for _, s := range secrets {
			if strings.Count(raw, s) == 1 && leaks(out, s) {
				t.Fatalf("URL(%q) = %q shows %q, which it found secret", raw, out, s)
			}
		}
		_ = NewScrubber(raw).String(raw)
	})
}

func validScheme(s string) bool {
	_, _, ok := cutScheme(s + "://")
	return ok
}
