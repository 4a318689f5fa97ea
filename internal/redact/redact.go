// Package redact is eventsync's one way of hiding secrets in what it
// prints. Every connection string (a bus, store, source or sink URL, or a
// PostgreSQL key=value DSN) goes through URL before it reaches a message,
// a log line, a status page or a metric; every error an adapter returns
// from opening a connection goes through Error, and every logger that
// adapters get goes through Logger, which remove the secrets of the
// connection strings they were given wherever they appear, whatever a
// driver printed. Header hides the value of an HTTP header that carries a
// credential.
//
// What counts as a secret:
//   - a URL's password, written escaped or not, including one holding '@',
//     '/', '?' or '#' (everything before the last '@' is hidden when the
//     URL's structure is ambiguous);
//   - a user name alone where it is a token (nats://TOKEN@host; any scheme
//     other than postgres, postgresql, amqp and amqps);
//   - the value of a query parameter or key=value setting whose name
//     names a credential (password, sslpassword, token, secret, api_key,
//     auth…: see SecretKey).
//
// Redaction is built on (*url.URL).Redacted for URLs that parse without
// ambiguity, and masks text spans otherwise; it over-hides rather than
// leaks.
package redact

import (
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Mask replaces every hidden secret.
const Mask = "xxxxx"

// minScrub is the shortest secret Scrubber removes from free text: a
// shorter one would take ordinary words with it, and is no secret worth
// the name. URL masks secrets of every length.
const minScrub = 3

// minPiece is the shortest piece of a secret (see Scrubber.add) Scrubber
// removes on its own; pieceDelims split a secret into pieces.
const (
	minPiece    = 4
	pieceDelims = "@:/?#&="
)

// URL returns raw, a connection string, with its secrets masked: a URL
// (scheme://…) or, without "://", a key=value DSN (host=h password=p).
func URL(raw string) string {
	out, _ := analyze(raw)
	return out
}

// Secrets returns the secret substrings of raw, as written and decoded,
// for a Scrubber to remove from text that echoes them.
func Secrets(raw string) []string {
	_, secrets := analyze(raw)
	return secrets
}

// namesUser lists the schemes whose URLs' user name, given without a
// password, is a user name and not a credential.
var namesUser = map[string]bool{"postgres": true, "postgresql": true, "amqp": true, "amqps": true}

// analyze masks raw and returns what it masked.
func analyze(raw string) (string, []string) {
	scheme, rest, ok := cutScheme(raw)
	if !ok {
		return keyValues(raw)
	}
	var secrets []string
	at := strings.LastIndexByte(rest, '@')
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	u, err := url.Parse(raw)
	if at > end || err != nil || u.Opaque != "" {
		// The structure is ambiguous: an unescaped '/', '?' or '#' in a
		// password moves the '@' past the authority, or the URL does not
		// parse at all. Everything before the last '@' may be the
		// password, and a secret query parameter may start before or
		// after it: mask every span any reading gives.
		var spans [][2]int
		if at >= 0 {
			spans = append(spans, [2]int{0, at})
			// The password (or token) alone in every reading, for
			// Scrubber.
			colon := strings.IndexByte(rest[:at], ':')
			for p := 0; p <= at; p++ {
				switch {
				case rest[p] != '@':
				case colon >= 0 && colon < p:
					secrets = append(secrets, rest[colon+1:p])
				default:
					secrets = append(secrets, rest[:p])
				}
			}
		}
		spans = append(spans, querySpans(rest, 0)...)
		if at >= 0 {
			spans = append(spans, querySpans(rest[at+1:], at+1)...)
		}
		out, masked := maskSpans(rest, spans)
		return scheme + "://" + out, decoded(append(secrets, masked...))
	}
	if u.User != nil {
		if p, has := u.User.Password(); has {
			secrets = append(secrets, p, rest[strings.IndexByte(rest, ':')+1:at])
		} else if !namesUser[strings.ToLower(scheme)] {
			secrets = append(secrets, u.User.Username(), rest[:at])
			u.User = url.User(Mask)
		}
	}
	out := u.Redacted()
	out, qs := maskSpans(out, querySpans(out, 0))
	return out, decoded(append(secrets, qs...))
}

// cutScheme splits "scheme://rest"; ok is false for anything else.
func cutScheme(raw string) (scheme, rest string, ok bool) {
	scheme, rest, ok = strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return "", "", false
	}
	for i, c := range scheme {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return "", "", false
		}
	}
	return scheme, rest, true
}

// querySpans returns the spans, offset by off, of the values of secret
// parameters in text (host, path, ?query, #fragment): the pairs after the
// first '?' or '#', each ending at '&' or '#'.
func querySpans(text string, off int) [][2]int {
	q := strings.IndexAny(text, "?#")
	if q < 0 {
		return nil
	}
	var spans [][2]int
	for start := q + 1; start <= len(text); {
		n := strings.IndexAny(text[start:], "&#")
		if n < 0 {
			n = len(text) - start
		}
		if k, v, ok := strings.Cut(text[start:start+n], "="); ok && SecretKey(unescapeKey(k)) {
			vstart := start + len(k) + 1
			spans = append(spans, [2]int{off + vstart, off + vstart + len(v)})
		}
		start += n + 1
	}
	return spans
}

// maskSpans replaces the union of spans of text by Mask and returns the
// text it hid, span by span and merged.
func maskSpans(text string, spans [][2]int) (string, []string) {
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	var hidden []string
	for _, sp := range spans {
		hidden = append(hidden, text[sp[0]:sp[1]])
	}
	pos := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		if end <= start {
			continue
		}
		b.WriteString(text[pos:start] + Mask)
		hidden = append(hidden, text[start:end])
		pos = end
	}
	b.WriteString(text[pos:])
	return b.String(), hidden
}

func unescapeKey(k string) string {
	if dk, err := url.QueryUnescape(k); err == nil {
		return dk
	}
	return k
}

// keyValues masks the secret values of a key=value connection string
// (libpq's form: values unquoted up to a space, or 'quoted' with \
// escapes; spaces allowed around '='). A word that is no key=value
// setting but holds an '@' (user:password@host) is masked up to its
// last '@'.
func keyValues(s string) (string, []string) {
	var b strings.Builder
	var secrets []string
	i := 0
	for i < len(s) {
		if isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		start := i
		for i < len(s) && !isSpace(s[i]) && s[i] != '=' {
			i++
		}
		key := s[start:i]
		j := i
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		if j >= len(s) || s[j] != '=' {
			// A word without '=': no setting.
			if at := strings.LastIndexByte(key, '@'); at >= 0 {
				secrets = append(secrets, key[:at])
				b.WriteString(Mask + key[at:])
			} else {
				b.WriteString(key)
			}
			continue
		}
		j++ // '='
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		b.WriteString(s[start:j])
		vstart := j
		if j < len(s) && s[j] == '\'' {
			j++
			for j < len(s) && s[j] != '\'' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s)) // the closing quote
		} else {
			for j < len(s) && !isSpace(s[j]) {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j, len(s))
		}
		value := s[vstart:j]
		if SecretKey(key) {
			secrets = append(secrets, value, unquote(value))
			b.WriteString(Mask)
		} else {
			b.WriteString(value)
		}
		i = j
	}
	return b.String(), secrets
}

// unquote undoes libpq's quoting of a key=value setting: 'a\'b' is a'b.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
		v = v[1 : len(v)-1]
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// secretWords are parts of setting, parameter and header names that carry
// credentials, matched in the name lowercased with '-', '_' and '.'
// removed.
var secretWords = []string{"pass", "pwd", "secret", "token", "auth", "credential", "signature", "apikey", "accesskey", "privatekey", "nkey", "seed", "jwt", "cookie", "session"}

// SecretKey reports whether a query parameter, key=value setting or
// header of this name carries a credential: password, sslpassword,
// token, access_token, secret, api_key, X-Api-Key, Authorization,
// Cookie, and the like (matched loosely: over-hiding is the safe side).
func SecretKey(name string) bool {
	n := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.':
			return -1
		}
		return r
	}, strings.ToLower(name))
	if n == "key" || n == "sig" || n == "pw" {
		return true
	}
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Header returns value, or Mask when the header named name carries a
// credential (SecretKey: Authorization, Cookie, X-Api-Key, …).
func Header(name, value string) string {
	if SecretKey(name) {
		return Mask
	}
	return value
}

// decoded adds the unescaped forms of secrets and drops empty ones.
func decoded(secrets []string) []string {
	out := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		if s == "" {
			continue
		}
		out = append(out, s)
		if d, err := url.PathUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
		if d, err := url.QueryUnescape(s); err == nil && d != s {
			out = append(out, d)
		}
	}
	return out
}

// Scrubber removes known secrets from free text, in the forms a message
// may carry them: as written, URL-escaped, Go-quoted or JSON-escaped.
// The zero value removes nothing.
type Scrubber struct {
	secrets []string // longest first
}

// NewScrubber returns a Scrubber for the secrets of the connection strings
// raws (see Secrets).
func NewScrubber(raws ...string) *Scrubber {
	s := &Scrubber{}
	for _, raw := range raws {
		s.add(true, Secrets(raw)...)
	}
	return s
}

// AddValues adds secret values themselves (an API token from a header)
// and returns s.
func (s *Scrubber) AddValues(values ...string) *Scrubber {
	s.add(false, values...)
	return s
}

// AddHeader adds the values of a header that carries a credential
// (SecretKey: Authorization, X-Api-Key, Cookie, …), and the credentials
// of an "Authorization: Scheme credentials" value on their own, and
// returns s. Other headers add nothing.
func (s *Scrubber) AddHeader(name string, values ...string) *Scrubber {
	if !SecretKey(name) {
		return s
	}
	for _, v := range values {
		s.add(false, v)
		if _, cred, ok := strings.Cut(v, " "); ok {
			s.add(false, strings.TrimSpace(cred))
		}
	}
	return s
}

func (s *Scrubber) add(pieces bool, values ...string) {
	for _, v := range values {
		if len(v) < minScrub {
			continue
		}
		// Drivers read an unescaped '@', ':' or '/' in a password their own
		// way (pgx takes the first '@' as the end of the userinfo and
		// prints the rest as the host): hide the pieces too.
		if pieces && strings.ContainsAny(v, pieceDelims) {
			for _, piece := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(pieceDelims, r) }) {
				if len(piece) >= minPiece && piece != v {
					s.add(false, piece)
				}
			}
		}
		q := strconv.Quote(v)
		j, _ := json.Marshal(v)
		for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v), url.UserPassword("", v).String()[1:] /* the userinfo form */, q[1 : len(q)-1], string(j[1 : len(j)-1])} {
			if len(form) >= minScrub && !slices.Contains(s.secrets, form) {
				s.secrets = append(s.secrets, form)
			}
		}
	}
	s.sort()
}

// sort puts longer secrets first, so a secret is removed before a part
// of it could leave the rest.
func (s *Scrubber) sort() {
	slices.SortFunc(s.secrets, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	s.secrets = slices.Compact(s.secrets)
}

// Empty reports whether s knows no secret.
func (s *Scrubber) Empty() bool { return s == nil || len(s.secrets) == 0 }

// String returns text with every known secret replaced by Mask.
func (s *Scrubber) String(text string) string {
	if s.Empty() {
		return text
	}
	for _, secret := range s.secrets {
		if strings.Contains(text, secret) {
			text = strings.ReplaceAll(text, secret, Mask)
		}
	}
	return text
}

// Error returns err with a message free of known secrets; errors.Is and
// errors.As see err's chain as before. nil stays nil.
func (s *Scrubber) Error(err error) error {
	if err == nil || s.Empty() {
		return err
	}
	msg := err.Error()
	if clean := s.String(msg); clean != msg {
		return &scrubbed{msg: clean, err: err}
	}
	return err
}

// Error returns err with the secrets of the connection strings raws
// removed from its message (see Scrubber.Error).
func Error(err error, raws ...string) error {
	if err == nil {
		return nil
	}
	return NewScrubber(raws...).Error(err)
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }
