// Package console is eventsync's web console and its HTTP control API, a
// process of its own (`eventsync console`) over the same bus and state
// store as the workers. Every read and every action goes through
// internal/ops, the layer `eventsync ctl` uses too; the HTML pages and the
// JSON API under /api/v1/ (docs/api.md) share it, and a page's form runs
// the same action function as the API call.
//
// Pages are server-rendered from html/template files embedded with
// go:embed, with one embedded stylesheet: nothing is loaded from
// elsewhere at run time.
//
// Access control: the console listens on 127.0.0.1 unless told otherwise.
// Every mutating call needs the token (Config.Token): as a bearer token
// (Authorization: Bearer …) from scripts, or through the session cookie a
// browser gets by signing in with it. Bound to any other address, reads
// need it too, and New refuses to start without one. Form posts are
// checked twice against cross-site request forgery: net/http's
// CrossOriginProtection (Sec-Fetch-Site / Origin) and a per-session form
// token. Every mutation writes one audit log line (who, what, result).
package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/eventsync/eventsync/internal/ops"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// DefaultAddr is where the console listens unless told otherwise.
const DefaultAddr = "127.0.0.1:9092"

// Config configures a console.
type Config struct {
	// Addr is host:port to listen on (DefaultAddr when empty).
	Addr string
	// Token authorises mutations (and, off loopback, every request).
	// Empty: the console is read-only, and it must listen on loopback.
	Token string
	// Ops is the deployment the console operates.
	Ops *ops.Ops
	// Deployment names it on the pages (the namespace, say).
	Deployment string
	Logger     *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is a configured console; Handler serves it, Run listens.
type Server struct {
	cfg      Config
	log      *slog.Logger
	loopback bool
	pages    map[string]*template.Template
	session  string // the session cookie's value: derived from the token
	formKey  string // the form token: derived from the token
	handler  http.Handler
}

// New validates cfg and builds the console.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Ops == nil {
		return nil, errors.New("console: no deployment to operate (Ops is nil)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Ops.Now == nil {
		cfg.Ops.Now = cfg.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen address %q: %w", cfg.Addr, err)
	}
	s.loopback = isLoopback(host)
	if !s.loopback && cfg.Token == "" {
		return nil, fmt.Errorf("console: listening on %s (not loopback) needs a token for every request: set EVENTSYNC_CONSOLE_TOKEN or give a token file, or listen on 127.0.0.1", cfg.Addr)
	}
	if cfg.Token != "" && len(cfg.Token) < 16 {
		return nil, errors.New("console: the token is shorter than 16 characters; use a long random one (openssl rand -hex 32)")
	}
	if cfg.Token != "" {
		s.session = derive(cfg.Token, "eventsync-console-session")
		s.formKey = derive(cfg.Token, "eventsync-console-form")
	}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func derive(token, purpose string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(purpose))
	return hex.EncodeToString(m.Sum(nil))
}

// Handler serves the console and its API.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on the configured address and serves until ctx ends, then
// shuts down within five seconds. ready, when not nil, is called with the
// console's URL once it listens.
func (s *Server) Run(ctx context.Context, ready func(url string)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("console: listen on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // a replay of many messages takes a while
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/"
	s.log.Info("console listening", "url", url, "auth", s.authMode())
	if ready != nil {
		ready(url)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-errc
	if err != nil {
		return fmt.Errorf("console: shut down: %w", err)
	}
	return nil
}

func (s *Server) authMode() string {
	switch {
	case s.cfg.Token == "":
		return "read-only (no token: mutations refused)"
	case s.loopback:
		return "token for mutations"
	default:
		return "token for every request"
	}
}

// routes builds the mux: the API, the pages, the stylesheet; around them
// the host check, cross-origin protection and the read gate.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.apiRoutes(mux)
	s.pageRoutes(mux)
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.audit(r, "refused", "", errors.New("cross-origin request"))
		s.fail(w, r, http.StatusForbidden, "forbidden", "cross-origin request refused")
	}))
	return s.checkHost(cop.Handler(s.gateReads(mux)))
}

// checkHost refuses a Host header other than a loopback name when the
// console listens on loopback, so that a web page cannot reach it through
// a DNS name rebound to 127.0.0.1.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.loopback {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !isLoopback(strings.Trim(host, "[]")) {
				s.fail(w, r, http.StatusMisdirectedRequest, "wrong_host", "this console answers on a loopback address only")
				return
			}
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Referrer-Policy", "same-origin")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		next.ServeHTTP(w, r)
	})
}

// gateReads asks for the token on every request, except the sign-in page
// and the stylesheet, when the console listens off loopback.
func (s *Server) gateReads(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.loopback || s.authorised(r) != "" || r.URL.Path == "/login" || strings.HasPrefix(r.URL.Path, "/static/") {
			next.ServeHTTP(w, r)
			return
		}
		if isAPI(r) {
			s.fail(w, r, http.StatusUnauthorized, "unauthorized", "this console needs the token for every request: send Authorization: Bearer <token>")
			return
		}
		http.Redirect(w, r, "/login?next="+url.QueryEscape(safeNext(r.URL.RequestURI())), http.StatusSeeOther)
	})
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

const (
	sessionCookie  = "eventsync_console"
	operatorCookie = "eventsync_operator"
	flashCookie    = "eventsync_flash"
)

// authorised returns how the request proved it holds the token ("bearer"
// or "session"), or "" when it did not.
func (s *Server) authorised(r *http.Request) string {
	if s.cfg.Token == "" {
		return ""
	}
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.cfg.Token)) == 1 {
			return "bearer"
		}
		return ""
	}
	if c, err := r.Cookie(sessionCookie); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(s.session)) == 1 {
		return "session"
	}
	return ""
}

// who names the caller for the audit log: the operator name given at sign
// in (or in the X-Eventsync-Operator header), how it authenticated, and
// its address.
func (s *Server) who(r *http.Request) string {
	name := s.operator(r)
	how := s.authorised(r)
	if how == "" {
		how = "no token"
	}
	return fmt.Sprintf("%s (%s) from %s", name, how, r.RemoteAddr)
}

// cleanName keeps an operator name printable and short.
func cleanName(s string) string { return cleanText(s, 64) }

// cleanText keeps typed text printable and at most n bytes (whole runes).
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	for len(s) > n {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// audit writes the one log line a mutation leaves: who, what, on what,
// and how it ended.
func (s *Server) audit(r *http.Request, action, target string, err error, attrs ...any) {
	args := []any{"who", s.who(r), "action", action, "target", target, "at", s.cfg.Now().UTC().Format(time.RFC3339Nano)}
	args = append(args, attrs...)
	if err != nil {
		s.log.Warn("console audit", append(args, "result", "refused", "error", err.Error())...)
		return
	}
	s.log.Info("console audit", append(args, "result", "done")...)
}

// safeNext keeps a post-sign-in redirect on this console.
func safeNext(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.Contains(p, "\\") {
		return "/"
	}
	return p
}
