// Package httpsink is the declarative HTTP adapter of the sink port: a YAML
// description of a third-party REST API (base URL, headers, and per entity
// the create, update, delete, lookup and list calls as Go templates) becomes
// a sink.Sink and sink.Lister.
//
// Most entities need one line, `listing: {collection: listings}`, which
// gives the conventional REST routes; see Config.WithDefaults. An API with
// its own names for the key and the version is described by settings
// (EntityConfig.ExternalIDField, VersionField, VersionHeader), and body
// templates build other shapes with the merge function. Responses are
// classified per the sink contract: 2xx succeeds; 404 (or 410) on update and
// delete is sink.ErrNotFound; 408, 429, 5xx, timeouts and connection errors
// are retryable, honouring Retry-After; other 4xx are permanent and carry a
// bounded excerpt of the response body.
package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/eventsync/eventsync/internal/envfile"
	"github.com/eventsync/eventsync/internal/redact"
	"github.com/eventsync/eventsync/internal/setting"
	"github.com/eventsync/eventsync/internal/tlsconf"
	"github.com/eventsync/eventsync/sink"
)

// MaxRetryAfter caps a server's Retry-After so one odd header cannot stall
// an entity for days.
const MaxRetryAfter = 10 * time.Minute

// maxResponseBytes bounds a successful response read into memory (one list
// page is the largest expected).
const maxResponseBytes = 32 << 20

// Observer is told about every HTTP call the sink makes: the operation
// (create, update, delete, lookup, list), the entity, the HTTP status (0 when
// no response arrived), the call's duration and its error (nil on success).
// It is called from the calling goroutine and must be fast and safe for
// concurrent use.
type Observer func(op, entity string, status int, d time.Duration, err error)

// Option configures New.
type Option func(*Sink) error

// WithHTTPClient makes the sink use c instead of its own tuned client. The
// per-request timeout from the config still applies through the context.
func WithHTTPClient(c *http.Client) Option {
	return func(s *Sink) error {
		if c == nil {
			return errors.New("httpsink.WithHTTPClient: client is nil")
		}
		s.client = c
		s.ownsClient = false
		return nil
	}
}

// WithLogger sets the logger; nil discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(s *Sink) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		s.log = l
		return nil
	}
}

// WithObserver registers fn to be told about every HTTP call.
func WithObserver(fn Observer) Option {
	return func(s *Sink) error {
		if fn == nil {
			return errors.New("httpsink.WithObserver: observer is nil")
		}
		s.observe = fn
		return nil
	}
}

// Sink is the HTTP sink. It is safe for concurrent use by many goroutines.
type Sink struct {
	entities   map[string]*entity
	client     *http.Client
	ownsClient bool
	tls        TLSConfig
	log        *slog.Logger
	observe    Observer
	now        func() time.Time
	// tracerProvider, when set, traces the client's requests (applied
	// after every option, whatever their order).
	tracerProvider trace.TracerProvider
	// secrets are the base URLs' credentials and the credential headers'
	// values, kept out of logs and of response excerpts (an API that
	// echoes the token it refused).
	secrets *redact.Scrubber
	// auth adds the OAuth2 token and HMAC signature; nil without sink.auth.
	auth *authenticator
}

// entity is one entity's compiled configuration.
type entity struct {
	name    string
	baseURL string
	timeout time.Duration
	headers http.Header // with Accept unless configured
	// bodyHeaders are headers with Content-Type unless configured.
	bodyHeaders http.Header
	maxExcerpt  int

	create, update, delete *operation
	lookup                 *operation
	lookupIDs              jsonPath
	list                   *operation
	listItems              jsonPath
	listID                 jsonPath
	listExternalID         jsonPath
	perPage, firstPage     int
	idPath                 jsonPath
	// versionHeader, when not empty, carries the version of every create
	// and update, as an entity tag when versionETag.
	versionHeader string
	versionETag   bool
	// headerTemplates are the headers rendered per request;
	// batchHeaderTemplates those of them a batch call sends.
	headerTemplates      []headerTemplate
	batchHeaderTemplates []headerTemplate
	// batch are the bulk routes by kind (create, update, delete); nil
	// where the entity has none.
	batch [opDelete + 1]*batchOp
}

var (
	_ sink.Sink   = (*Sink)(nil)
	_ sink.Lister = (*Sink)(nil)
)

// New builds a sink from cfg (defaults are applied here, so a Config built
// in Go needs no WithDefaults call). Header values' ${NAME} references are
// expanded from the environment now, from the variable NAME or the file
// named by NAME_FILE (a mounted secret); a missing variable is an error
// naming it.
func New(cfg Config, opts ...Option) (*Sink, error) {
	var fileErrs []error
	entities, err := compile(cfg.WithDefaults(), func(name string) (string, bool) {
		v, ok, err := envfile.Lookup(name, os.LookupEnv, os.ReadFile)
		if err != nil {
			fileErrs = append(fileErrs, err)
			return "", true // reported here, not as a missing variable
		}
		return v, ok
	})
	auth, aerrs := compileAuth(cfg.Auth, func(name string) (string, bool) {
		v, ok, err := envfile.Lookup(name, os.LookupEnv, os.ReadFile)
		if err != nil {
			fileErrs = append(fileErrs, err)
			return "", true
		}
		return v, ok
	})
	if err = errors.Join(append(append([]error{err}, aerrs...), fileErrs...)...); err != nil {
		return nil, fmt.Errorf("invalid sink config: %w", err)
	}
	transport := newTransport()
	if !cfg.TLS.IsZero() {
		if transport.TLSClientConfig, err = cfg.TLS.Build("sink.tls"); err != nil {
			return nil, fmt.Errorf("invalid sink config: %w", err)
		}
	}
	s := &Sink{
		entities:   entities,
		tls:        cfg.TLS,
		auth:       auth,
		client:     &http.Client{Transport: transport},
		ownsClient: true,
		log:        slog.Default(),
		observe:    func(string, string, int, time.Duration, error) {},
		now:        time.Now,
	}
	for _, opt := range opts {
		if err := opt(s); err != nil {
			return nil, err
		}
	}
	if !s.ownsClient && !cfg.TLS.IsZero() {
		return nil, setting.Errorf("sink", "invalid sink config: sink.tls is set but WithHTTPClient gives the client: configure TLS on that client's transport instead")
	}
	if s.tracerProvider != nil {
		s.client = traceClient(s.client, s.tracerProvider)
	}
	s.secrets = redact.NewScrubber()
	if s.auth != nil {
		s.secrets.AddValues(s.auth.secrets()...)
	}
	for _, ent := range entities {
		s.secrets.AddValues(redact.Secrets(ent.baseURL)...)
		for name, values := range ent.headers {
			s.secrets.AddHeader(name, values...)
		}
	}
	for _, e := range cfg.EntityConfigs { // secret query parameters written in paths
		var paths []string
		for _, r := range []*Request{e.Create, e.Update, e.Delete} {
			if r != nil {
				paths = append(paths, r.Path)
			}
		}
		if e.Lookup != nil {
			paths = append(paths, e.Lookup.Path)
		}
		if e.List != nil {
			paths = append(paths, e.List.Path)
		}
		paths = append(paths, batchPathsOf(e)...)
		for _, p := range paths {
			s.secrets.AddValues(redact.Secrets("http://h" + p)...)
		}
	}
	s.log = s.secrets.Logger(s.log)
	return s, nil
}

// newTransport is tuned for hundreds of concurrent calls to one host: keep
// that many idle connections instead of Go's default of two per host, so a
// busy worker does not open and close a connection per call.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 512
	t.MaxConnsPerHost = 0 // concurrency is bounded by the worker, not here
	t.IdleConnTimeout = 90 * time.Second
	t.ResponseHeaderTimeout = 0 // the per-request context bounds the call
	return t
}

// Close releases the idle connections of the sink's own client.
func (s *Sink) Close() {
	if s.ownsClient {
		s.client.CloseIdleConnections()
	}
}

// Entities returns the names of the configured entities, sorted.
func (s *Sink) Entities() []string { return sortedKeys(s.entities) }

// Create makes a new remote record and returns its remote id.
func (s *Sink) Create(ctx context.Context, r sink.Record) (string, error) {
	ent, err := s.entity(opCreate, r.Entity)
	if err != nil {
		return "", err
	}
	data, body, err := recordData(ent.create, r)
	if err != nil {
		return "", err
	}
	var id string
	err = s.call(ctx, ent, ent.create, data, body, func(resp *http.Response, body []byte) error {
		var err error
		if id, err = extractID(body, ent.idPath, "create", ent.maxExcerpt); err != nil {
			// The record probably exists now; a permanent error parks the
			// event for an operator to fix id_path, and the pending intent
			// makes the next attempt look the record up instead of creating
			// it again.
			return fmt.Errorf("%w (fix sink.entities.%s.id_path): %w", err, ent.name,
				&sink.Error{Op: "create", Status: resp.StatusCode, Retryable: false})
		}
		return nil
	})
	return id, err
}

// Update replaces the remote record; sink.ErrNotFound when it is gone.
func (s *Sink) Update(ctx context.Context, remoteID string, r sink.Record) error {
	ent, err := s.entity(opUpdate, r.Entity)
	if err != nil {
		return err
	}
	data, body, err := recordData(ent.update, r)
	if err != nil {
		return err
	}
	data.RemoteID = remoteID
	return s.call(ctx, ent, ent.update, data, body, nil)
}

// Delete removes the remote record; sink.ErrNotFound when already gone.
func (s *Sink) Delete(ctx context.Context, entityName, remoteID string) error {
	ent, err := s.entity(opDelete, entityName)
	if err != nil {
		return err
	}
	return s.call(ctx, ent, ent.delete, TemplateData{Entity: entityName, RemoteID: remoteID}, nil, nil)
}

// Lookup returns the remote ids of records whose external id is key.
func (s *Sink) Lookup(ctx context.Context, entityName, key string) ([]string, error) {
	ent, err := s.entity(opLookup, entityName)
	if err != nil {
		return nil, err
	}
	if ent.lookup == nil {
		return nil, &sink.Error{Op: "lookup", Err: fmt.Errorf("entity %q has no lookup configured; add sink.entities.%s.lookup so ambiguous creates can be resolved", entityName, entityName)}
	}
	var ids []string
	err = s.call(ctx, ent, ent.lookup, TemplateData{Entity: entityName, Key: key}, nil, func(resp *http.Response, body []byte) error {
		var err error
		if ids, err = extractIDs(body, ent.lookupIDs, "lookup", ent.maxExcerpt); err != nil {
			return fmt.Errorf("%w (fix sink.entities.%s.lookup.ids): %w", err, ent.name,
				&sink.Error{Op: "lookup", Status: resp.StatusCode, Retryable: false})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// List calls fn for every remote record of entity, page by page, until a
// page has fewer records than the page size. An error from fn stops it and
// is returned as is.
func (s *Sink) List(ctx context.Context, entityName string, fn func(sink.RemoteRecord) error) error {
	ent, err := s.entity(opList, entityName)
	if err != nil {
		return err
	}
	if ent.list == nil {
		return &sink.Error{Op: "list", Err: fmt.Errorf("entity %q has no list configured; add sink.entities.%s.list", entityName, entityName)}
	}
	// An API that ignores the page parameter returns the same full page
	// forever; compare first ids to stop instead of looping.
	prevFirst := ""
	for page := ent.firstPage; ; page++ {
		var items []map[string]any
		var status int
		var perr error
		err := s.call(ctx, ent, ent.list, TemplateData{Entity: entityName, Page: page, PerPage: ent.perPage}, nil, func(resp *http.Response, body []byte) error {
			status = resp.StatusCode
			items, perr = listItems(body, ent.listItems, ent.maxExcerpt)
			return nil
		})
		if err != nil {
			return fmt.Errorf("list %s page %d: %w", entityName, page, err)
		}
		if perr != nil {
			return fmt.Errorf("list %s page %d: %w (fix sink.entities.%s.list.items): %w", entityName, page, perr, entityName,
				&sink.Error{Op: "list", Status: status})
		}
		for i, item := range items {
			rec := sink.RemoteRecord{Fields: item}
			values := ent.listID.eval(item)
			id, ok := "", false
			if len(values) == 1 {
				id, ok = idString(values[0])
			}
			if !ok {
				return fmt.Errorf("list %s page %d: item %d has no string or number at id path %q (fix sink.entities.%s.list.id): %w",
					entityName, page, i, ent.listID.raw, entityName, &sink.Error{Op: "list", Status: status})
			}
			rec.RemoteID = id
			if i == 0 {
				if page > ent.firstPage && id == prevFirst {
					return fmt.Errorf("list %s: page %d starts with the same record (%q) as page %d; does the API honour sink.entities.%s.list.path's page parameter?: %w",
						entityName, page, id, page-1, entityName, &sink.Error{Op: "list", Status: status})
				}
				prevFirst = id
			}
			if values := ent.listExternalID.eval(item); len(values) == 1 {
				rec.Key, _ = idString(values[0])
			}
			if err := fn(rec); err != nil {
				return err
			}
		}
		if len(items) < ent.perPage {
			return nil
		}
	}
}

func (s *Sink) entity(kind opKind, name string) (*entity, error) {
	ent, ok := s.entities[name]
	if !ok {
		return nil, &sink.Error{Op: kind.String(), Err: fmt.Errorf("no sink configured for entity %q; add it under sink.entities (configured: %s)",
			name, strings.Join(s.Entities(), ", "))}
	}
	return ent, nil
}

// recordData prepares the template data of a create or update and, when
// op has the default body, the body. The data is decoded only when a
// template reads it or bodyShape.splice cannot vouch for it.
func recordData(op *operation, r sink.Record) (TemplateData, []byte, error) {
	d := TemplateData{EventID: r.EventID, Entity: r.Entity, Key: r.Key, Version: r.Version}
	shape := op.shape
	if shape == nil {
		shape = defaultShape
	}
	raw := r.Data
	if trimmed := bytes.TrimSpace(raw); len(trimmed) == 0 || string(trimmed) == "null" {
		raw = []byte("{}")
		if op.usesData {
			d.Data, d.DataJSON = map[string]any{}, "{}"
		}
	} else if op.usesData {
		d.DataJSON = string(raw)
	}
	var body []byte
	ok := false
	switch {
	case op.body == nil:
		body, ok = shape.splice(raw, r.Key, r.Version)
	case !op.usesData:
		ok = objectStart(raw)
	}
	if ok && (!op.usesData || d.Data != nil) {
		return d, body, nil
	}
	var err error
	if d.Data, err = decodeData(raw); err != nil {
		return d, nil, &sink.Error{Op: op.kind.String(), Err: fmt.Errorf("event data of %s/%s is not a JSON object: %w", r.Entity, r.Key, err)}
	}
	if op.body == nil && !ok {
		if body, err = shape.mapBody(d.Data, d.Key, d.Version); err != nil {
			return d, nil, &sink.Error{Op: op.kind.String(), Err: fmt.Errorf("encode %s body: %w", op.kind, err)}
		}
	}
	if !op.usesData {
		d.Data = nil
	}
	return d, body, nil
}

// decodeData decodes the first JSON value of data into a map, numbers kept
// exact.
func decodeData(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	err := dec.Decode(&m)
	return m, err
}

// objectStart reports whether data starts with a valid JSON object, which
// is what decoding it into a map needs.
func objectStart(data []byte) bool {
	i := skipWS(data, 0)
	return i < len(data) && data[i] == '{' && (&walker{b: data}).value(i, 1) >= 0
}

// responses holds response buffers between calls; one larger than
// maxPooledResponse is left to the garbage collector.
var responses = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledResponse = 1 << 20

// call renders op's path (and body template; body is the default body or
// nil), sends it and classifies the outcome: a *sink.Error unless the
// status is 2xx. The response of a 2xx goes to read when it is not nil,
// whose error call returns; read must not keep the slice.
func (s *Sink) call(ctx context.Context, ent *entity, op *operation, data TemplateData, body []byte, read func(resp *http.Response, body []byte) error) error {
	var target string
	if op.plainPath != nil {
		target = renderPlain(ent.baseURL, op.plainPath, data)
	} else {
		path, err := execute(op.path, data)
		if err != nil {
			return &sink.Error{Op: op.kind.String(), Err: fmt.Errorf("render %s.path: %w", op.where, err)}
		}
		target = ent.baseURL + path
	}
	body, err := renderBody(ent, op, data, body)
	if err != nil {
		return err
	}
	kind := op.kind
	return s.do(ctx, ent, httpCall{
		op: kind.String(), observe: kind.String(), where: op.where, method: op.method, target: target, body: body,
		headers: data, version: kind == opCreate || kind == opUpdate, gone: kind == opUpdate || kind == opDelete,
	}, read)
}

// renderBody is op's body for data: its body template rendered and checked
// to be JSON, else body (the default body, or nil for none).
func renderBody(ent *entity, op *operation, data TemplateData, body []byte) ([]byte, error) {
	if op.body == nil {
		return body, nil
	}
	rendered, err := execute(op.body, data)
	if err != nil {
		return nil, &sink.Error{Op: op.kind.String(), Err: fmt.Errorf("render %s.body: %w", op.where, err)}
	}
	if !json.Valid([]byte(rendered)) {
		return nil, &sink.Error{Op: op.kind.String(), Err: fmt.Errorf("%s.body rendered invalid JSON for key %q: %s", op.where, data.Key, excerptString(rendered, ent.maxExcerpt))}
	}
	return []byte(rendered), nil
}

// httpCall is one rendered request of an entity, single or batch.
type httpCall struct {
	op      string // the errors' Op: create, update, delete, lookup, list
	observe string // the Observer's op: op, or batch_create for a batch
	where   string // config location of the route, for error messages
	method  string
	target  string // the full URL
	body    []byte // nil: no body
	// headers is what the header templates see.
	headers TemplateData
	// version sends the entity's version header (a single create or update).
	version bool
	// gone makes 404 and 410 sink.ErrNotFound: the call names one record.
	gone bool
	// batch sends only the header templates that do not name one record.
	batch bool
}

// do sends c with the entity's headers and the sink's credentials, within
// the entity's timeout, and classifies the outcome: a *sink.Error unless
// the status is 2xx. A 2xx response of at most maxResponseBytes goes to
// read when it is not nil, whose error do returns; read must not keep the
// slice.
func (s *Sink) do(ctx context.Context, ent *entity, c httpCall, read func(resp *http.Response, body []byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, ent.timeout)
	defer cancel()
	var reqBody io.Reader
	if c.body != nil {
		reqBody = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.target, reqBody)
	if err != nil {
		return &sink.Error{Op: c.op, Err: fmt.Errorf("%s.path rendered an unusable URL: %w", c.where, err)}
	}
	headers := ent.headers
	if c.body != nil {
		headers = ent.bodyHeaders
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	if ent.versionHeader != "" && c.version {
		req.Header[ent.versionHeader] = []string{versionHeaderValue(c.headers.Version, ent.versionETag)}
	}
	templates := ent.headerTemplates
	if c.batch {
		templates = ent.batchHeaderTemplates
	}
	if err := renderHeaders(req.Header, templates, c.headers); err != nil {
		return &sink.Error{Op: c.op, Err: fmt.Errorf("%s: %w", c.where, err)}
	}

	start := s.now()
	resp, err := s.send(ctx, req, c.body)
	if err != nil {
		if serr := (*sink.Error)(nil); errors.As(err, &serr) && serr.Op == "token" {
			s.finish(c.observe, ent.name, 0, start, err)
			return err
		}
		err = s.transportError(c, ent, err)
		s.finish(c.observe, ent.name, 0, start, err)
		return err
	}
	defer resp.Body.Close()
	status := resp.StatusCode
	if status >= 200 && status < 300 {
		limited := &io.LimitedReader{R: resp.Body, N: maxResponseBytes + 1}
		var buf *bytes.Buffer
		var n int64
		if read == nil {
			n, err = io.Copy(io.Discard, limited)
		} else {
			buf = responses.Get().(*bytes.Buffer)
			buf.Reset()
			defer func() {
				if buf.Cap() <= maxPooledResponse {
					responses.Put(buf)
				}
			}()
			n, err = buf.ReadFrom(limited)
		}
		switch {
		case err != nil:
			err = s.transportError(c, ent, fmt.Errorf("read response: %w", err))
		case n > maxResponseBytes:
			err = &sink.Error{Op: c.op, Status: status, Err: fmt.Errorf("%s %s: response is over %d bytes", c.method, redact.URL(c.target), maxResponseBytes)}
		}
		s.finish(c.observe, ent.name, status, start, err)
		if err != nil || read == nil {
			return err
		}
		return read(resp, buf.Bytes())
	}

	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, int64(ent.maxExcerpt)))
	// Drain a little more so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	serr := statusError(c.op, status, s.excerpt(excerpt, ent, resp), c.gone)
	if status == http.StatusUnauthorized && s.auth != nil {
		s.finish(c.observe, ent.name, status, start, serr)
		return fmt.Errorf("%w; %s", serr, s.auth.refusedHint())
	}
	if serr.Retryable {
		serr.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), s.now())
	}
	s.finish(c.observe, ent.name, status, start, serr)
	return serr
}

// statusError is the error of a non-2xx status for op: sink.ErrNotFound
// for 404 and 410 when gone (the call named one record), retryable per
// sink.ClassifyStatus, with body, a bounded and scrubbed excerpt.
func statusError(op string, status int, body string, gone bool) *sink.Error {
	serr := &sink.Error{Op: op, Status: status, Body: body}
	switch {
	case gone && (status == http.StatusNotFound || status == http.StatusGone):
		serr.Err = sink.ErrNotFound
	case sink.ClassifyStatus(status):
		serr.Retryable = true
	}
	return serr
}

// excerpt is b as an error's Body: at most the entity's max_body_excerpt,
// the sink's secrets and the OAuth2 token resp's request carried masked.
func (s *Sink) excerpt(b []byte, ent *entity, resp *http.Response) string {
	return scrubToken(s.secrets.String(excerptBytes(b, ent.maxExcerpt)), resp.Request)
}

// versionHeaderValue is the version as a header value: a decimal number,
// or a strong entity tag ("7") for If-Match and If-None-Match.
func versionHeaderValue(version int64, etag bool) string {
	if !etag {
		return strconv.FormatInt(version, 10)
	}
	var b [24]byte
	out := append(b[:0], '"')
	out = strconv.AppendInt(out, version, 10)
	return string(append(out, '"'))
}

func (s *Sink) transportError(c httpCall, ent *entity, err error) error {
	// The client's *url.Error repeats method and URL; keep only its cause.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	var hint string
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()):
		hint = fmt.Sprintf("no response within the %s timeout (sink.entities.%s.timeout)", ent.timeout, ent.name)
	case errors.Is(err, context.Canceled):
		hint = "canceled"
	default:
		hint = "is the API reachable? check sink base_url"
	}
	// Not ExplainTLS: a reset of an API's connection is a network
	// failure far more often than a certificate problem.
	if cerr := tlsconf.Explain(err, "sink.tls", s.tls); tlsconf.IsCertificateProblem(cerr) {
		err, hint = cerr, "TLS handshake failed"
	}
	return &sink.Error{Op: c.op, Retryable: true, Err: fmt.Errorf("%s %s: %s: %w", c.method, redact.URL(c.target), hint, err)}
}

func (s *Sink) finish(op, entity string, status int, start time.Time, err error) {
	d := s.now().Sub(start)
	s.observe(op, entity, status, d, err)
	if err != nil {
		s.log.Debug("sink call failed", "op", op, "entity", entity, "status", status, "duration", d, "err", err)
	}
}

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date,
// capped at MaxRetryAfter; 0 when absent or unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return 0
	case d > MaxRetryAfter:
		return MaxRetryAfter
	}
	return d
}
