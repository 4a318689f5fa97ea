package httpsink

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/eventsync/eventsync/internal/tlsconf"
)

// Defaults used by WithDefaults.
const (
	DefaultTimeout        = 10 * time.Second
	DefaultMaxBodyExcerpt = 512
	DefaultIDPath         = "id"
	DefaultLookupIDs      = "[].id"
	DefaultListItems      = "data"
	DefaultListID         = "id"
	// DefaultListExternalID is the list's external_id path when no
	// external_id_field is set; the list follows external_id_field.
	DefaultListExternalID = DefaultExternalIDField
	DefaultPerPage        = 100
	DefaultFirstPage      = 1
	// DefaultExternalIDField is the member of the default body that holds
	// the event's key, and the query parameter of the default lookup.
	DefaultExternalIDField = "external_id"
	// DefaultVersionField is the member of the default body that holds
	// the event's version.
	DefaultVersionField = "version"
	// VersionNone, as version_field, leaves the version out of the default
	// body; as version_header, sends no version header.
	VersionNone = "none"
	// DefaultPathPrefix is put in front of a collection that does not start
	// with "/": collection "listings" becomes "/v1/listings".
	DefaultPathPrefix = "/v1/"

	maxBodyExcerptLimit = 64 << 10
)

// Config is the declarative description of a third-party REST API: where it
// lives and, per entity, which HTTP call creates, updates, deletes, looks up
// and lists its records. It is the "sink" section of eventsync's YAML file.
type Config struct {
	// Defaults apply to every entity unless the entity overrides them.
	Defaults Defaults `yaml:"defaults"`
	// EntityConfigs maps an event's entity name (e.g. "listing") to its
	// routes; YAML key "entities".
	EntityConfigs map[string]EntityConfig `yaml:"entities"`
	// TLS is how https:// base URLs are verified: a custom certificate
	// authority, a client certificate for APIs that require one (mutual
	// TLS), the server name, the lowest TLS version.
	TLS TLSConfig `yaml:"tls"`
	// Auth adds an OAuth2 client-credentials token, an HMAC request
	// signature, or both, to every request (see AuthConfig).
	Auth AuthConfig `yaml:"auth"`
}

// TLSConfig is the TLS settings block shared by every eventsync
// connection (eventsync.TLSConfig).
type TLSConfig = tlsconf.Config

// Defaults are the settings shared by all entities.
type Defaults struct {
	// BaseURL is the API's root, e.g. https://api.example.com. Request paths
	// are appended to it verbatim, so it may carry a path prefix.
	BaseURL string `yaml:"base_url"`
	// Timeout bounds one HTTP call, including reading the response.
	Timeout time.Duration `yaml:"timeout"`
	// Headers are sent with every request. Values may reference environment
	// variables as ${NAME}, read from NAME or from the file named by
	// NAME_FILE (a mounted secret); a variable that is not set is a
	// start-up error. A value with {{ }} is a template rendered per request
	// over TemplateData without .Data (Idempotency-Key: "{{.EventID}}"); a
	// header that renders empty is not sent.
	Headers map[string]string `yaml:"headers"`
	// MaxBodyExcerpt bounds how much of an error response is kept in the
	// error (and so in logs and park reasons).
	MaxBodyExcerpt int `yaml:"max_body_excerpt"`
	// ExternalIDField, VersionField and VersionHeader say where the
	// event's key and version go (see EntityConfig); an entity's own
	// setting overrides these.
	ExternalIDField string `yaml:"external_id_field"`
	VersionField    string `yaml:"version_field"`
	VersionHeader   string `yaml:"version_header"`
}

// EntityConfig describes the routes of one entity. Set Collection to get the
// conventional REST routes (see WithDefaults); set an operation to override
// the conventional one.
type EntityConfig struct {
	// Collection names the REST collection ("listings" → /v1/listings, or a
	// full path like "/api/listings"). Operations left out get the defaults.
	Collection string `yaml:"collection"`
	// BaseURL, Timeout, Headers and MaxBodyExcerpt override Defaults;
	// Headers are merged over the default headers.
	BaseURL        string            `yaml:"base_url"`
	Timeout        time.Duration     `yaml:"timeout"`
	Headers        map[string]string `yaml:"headers"`
	MaxBodyExcerpt int               `yaml:"max_body_excerpt"`

	Create *Request       `yaml:"create"`
	Update *Request       `yaml:"update"`
	Delete *Request       `yaml:"delete"`
	Lookup *LookupRequest `yaml:"lookup"`
	List   *ListRequest   `yaml:"list"`
	// IDPath locates the remote id in a create response: "id", "data.id",
	// "[0].id". Numeric ids become their decimal string.
	IDPath string `yaml:"id_path"`
	// Batch describes the API's bulk endpoints (see BatchConfig); nil
	// writes every record with its own call.
	Batch *BatchConfig `yaml:"batch"`

	// ExternalIDField names the member of the default body that holds the
	// event's key (default "external_id", or Defaults.ExternalIDField). The
	// default lookup queries it (?external_ref={key}) and the default list
	// reads it. Letters, digits, _, -, $ and @.
	ExternalIDField string `yaml:"external_id_field"`
	// VersionField names the member of the default body that holds the
	// event's version (default "version", or Defaults.VersionField);
	// "none" leaves it out. A body template places .Version itself.
	VersionField string `yaml:"version_field"`
	// VersionHeader, when set, sends the event's version in this request
	// header with every create and update, whatever the body: a decimal
	// number ("X-Source-Version: 7"), or an entity tag ("If-Match: \"7\"")
	// for If-Match and If-None-Match. "none" turns off one set in Defaults.
	VersionHeader string `yaml:"version_header"`
}

// Request is one HTTP call. Path and Body are Go text/templates over
// TemplateData with the functions json, query, path and merge. For create
// and update an empty Body means the event's data with the external-id
// member (the key, "external_id" unless ExternalIDField says otherwise) and
// the version member ("version" unless VersionField says otherwise) set,
// replacing members of those names, the data's members as published; for
// delete an empty Body sends no body.
type Request struct {
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	Body   string `yaml:"body"`
}

// LookupRequest finds the remote records whose external id is the event's
// key. IDs is the path of the ids in the response, e.g. "[].id" for a bare
// array of records or "data[].id".
type LookupRequest struct {
	Method string `yaml:"method"`
	Path   string `yaml:"path"`
	Body   string `yaml:"body"`
	IDs    string `yaml:"ids"`
}

// ListRequest fetches one page of remote records; the sink pages from
// FirstPage until a page has fewer than PerPage items. Items is the path of
// the record array in a page ("data", or "[]" for a bare array); ID and
// ExternalID are paths inside one record.
type ListRequest struct {
	Method     string `yaml:"method"`
	Path       string `yaml:"path"`
	Body       string `yaml:"body"`
	Items      string `yaml:"items"`
	ID         string `yaml:"id"`
	ExternalID string `yaml:"external_id"`
	PerPage    int    `yaml:"per_page"`
	FirstPage  *int   `yaml:"first_page"`
}

// ParseConfig decodes the sink section of a YAML document, applies defaults
// and validates it. Unknown fields are refused with their line number, so a
// typo never silently falls back to a default.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("sink config is empty; it needs at least defaults.base_url and one entity under entities")
		}
		return Config{}, fmt.Errorf("parse sink config: %w", err)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadConfig reads and parses a sink config file; see ParseConfig.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read sink config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Entities returns the configured entity names, sorted.
func (c Config) Entities() []string {
	names := make([]string, 0, len(c.EntityConfigs))
	for name := range c.EntityConfigs {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// WithDefaults returns a copy with every unset option filled in. An entity
// with a Collection gets, for each operation it leaves out:
//
//	create: POST   /v1/{collection}            body: data + external_id + version
//	update: PUT    /v1/{collection}/{remote id} (same body)
//	delete: DELETE /v1/{collection}/{remote id}
//	lookup: GET    /v1/{collection}?external_id={key}, ids "[].id"
//	list:   GET    /v1/{collection}?page=N&per_page=M, items "data"
//
// where external_id is the entity's external-id field name.
func (c Config) WithDefaults() Config {
	out := c
	if out.Defaults.Timeout == 0 {
		out.Defaults.Timeout = DefaultTimeout
	}
	if out.Defaults.MaxBodyExcerpt == 0 {
		out.Defaults.MaxBodyExcerpt = DefaultMaxBodyExcerpt
	}
	if out.Defaults.ExternalIDField == "" {
		out.Defaults.ExternalIDField = DefaultExternalIDField
	}
	if out.Defaults.VersionField == "" {
		out.Defaults.VersionField = DefaultVersionField
	}
	out.EntityConfigs = make(map[string]EntityConfig, len(c.EntityConfigs))
	for name, e := range c.EntityConfigs {
		out.EntityConfigs[name] = e.withDefaults(out.Defaults)
	}
	return out
}

func (e EntityConfig) withDefaults(d Defaults) EntityConfig {
	if e.IDPath == "" {
		e.IDPath = DefaultIDPath
	}
	ext := firstNonEmpty(e.ExternalIDField, d.ExternalIDField, DefaultExternalIDField)
	if !fieldNamePattern.MatchString(ext) {
		ext = DefaultExternalIDField // refused by Validate; keep the defaults parseable
	}
	base := ""
	if e.Collection != "" && collectionPattern.MatchString(e.Collection) {
		base = e.Collection
		if !strings.HasPrefix(base, "/") {
			base = DefaultPathPrefix + base
		}
		item := base + "/{{.RemoteID | path}}"
		if e.Create == nil {
			e.Create = &Request{Method: http.MethodPost, Path: base}
		}
		if e.Update == nil {
			e.Update = &Request{Method: http.MethodPut, Path: item}
		}
		if e.Delete == nil {
			e.Delete = &Request{Method: http.MethodDelete, Path: item}
		}
		if e.Lookup == nil {
			e.Lookup = &LookupRequest{Method: http.MethodGet, Path: base + "?" + url.QueryEscape(ext) + "={{.Key | query}}"}
		}
		if e.List == nil {
			e.List = &ListRequest{Method: http.MethodGet, Path: base + "?page={{.Page}}&per_page={{.PerPage}}"}
		}
	}
	e.Batch = e.Batch.withDefaults(base)
	// Copy the requests so filling their defaults never writes through
	// pointers shared with the caller's Config.
	if e.Lookup != nil {
		l := *e.Lookup
		if l.Method == "" {
			l.Method = http.MethodGet
		}
		if l.IDs == "" {
			l.IDs = DefaultLookupIDs
		}
		e.Lookup = &l
	}
	if e.List != nil {
		l := *e.List
		if l.Method == "" {
			l.Method = http.MethodGet
		}
		if l.Items == "" {
			l.Items = DefaultListItems
		}
		if l.ID == "" {
			l.ID = DefaultListID
		}
		if l.ExternalID == "" {
			l.ExternalID = ext
		}
		if l.PerPage == 0 {
			l.PerPage = DefaultPerPage
		}
		if l.FirstPage == nil {
			first := DefaultFirstPage
			l.FirstPage = &first
		}
		e.List = &l
	}
	return e
}

var (
	entityNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	collectionPattern = regexp.MustCompile(`^/?[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$`)
	headerNamePattern = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	envRefPattern     = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	// fieldNamePattern is what external_id_field and version_field accept:
	// names that need no escaping in JSON, a URL query or a path (jsonPath).
	fieldNamePattern = regexp.MustCompile(`^[A-Za-z0-9_$@-]{1,128}$`)
)

// Validate reports every problem in the config, each naming its location
// (e.g. "sink.entities.listing.update.path: ..."). It compiles all
// templates and renders them with sample data, so a body that would not be
// JSON or a path that would not escape the key is caught at start-up.
// Call it on the result of WithDefaults.
func (c Config) Validate() error {
	_, err := compile(c, nil)
	_, aerrs := compileAuth(c.Auth, nil)
	return errors.Join(append([]error{err, c.TLS.Validate("sink.tls")}, aerrs...)...)
}

// compile turns a validated config into ready-to-run entities. lookupEnv
// expands ${NAME} in header values; nil only checks the references' syntax.
func compile(c Config, lookupEnv func(string) (string, bool)) (map[string]*entity, error) {
	var errs []error
	add := func(where, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
	}
	if c.Defaults.BaseURL != "" {
		if msg := checkBaseURL(c.Defaults.BaseURL); msg != "" {
			add("sink.defaults.base_url", "%s", msg)
		}
	}
	if c.Defaults.Timeout < 0 {
		add("sink.defaults.timeout", "%s is negative; use a duration like 10s", c.Defaults.Timeout)
	}
	if m := c.Defaults.MaxBodyExcerpt; m < 0 || m > maxBodyExcerptLimit {
		add("sink.defaults.max_body_excerpt", "%d is outside 1..%d", m, maxBodyExcerptLimit)
	}
	defaultHeaders, herrs := checkHeaders("sink.defaults.headers", c.Defaults.Headers, lookupEnv)
	errs = append(errs, herrs...)
	for _, msg := range checkShape("sink.defaults", c.Defaults.ExternalIDField, c.Defaults.VersionField, c.Defaults.VersionHeader) {
		errs = append(errs, errors.New(msg))
	}
	if len(c.EntityConfigs) == 0 {
		add("sink.entities", "no entities configured; add one, e.g. `listing: {collection: listings}`")
	}
	out := make(map[string]*entity, len(c.EntityConfigs))
	for _, name := range c.Entities() {
		e := c.EntityConfigs[name]
		where := "sink.entities." + name
		if !entityNamePattern.MatchString(name) {
			add(where, "entity name %q does not match [a-z][a-z0-9_]* (the event contract's entity names)", name)
			continue
		}
		compiled, eerrs := compileEntity(name, where, e, c.Defaults, defaultHeaders, lookupEnv)
		errs = append(errs, eerrs...)
		if compiled != nil {
			out[name] = compiled
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func compileEntity(name, where string, e EntityConfig, d Defaults, defaultHeaders http.Header, lookupEnv func(string) (string, bool)) (*entity, []error) {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", where, field, fmt.Sprintf(format, args...)))
	}
	ent := &entity{
		name:       name,
		baseURL:    firstNonEmpty(e.BaseURL, d.BaseURL),
		timeout:    e.Timeout,
		maxExcerpt: e.MaxBodyExcerpt,
	}
	if ent.timeout == 0 {
		ent.timeout = d.Timeout
	}
	if ent.maxExcerpt == 0 {
		ent.maxExcerpt = d.MaxBodyExcerpt
	}
	switch {
	case e.BaseURL != "":
		if msg := checkBaseURL(e.BaseURL); msg != "" {
			add("base_url", "%s", msg)
		}
	case d.BaseURL == "":
		add("base_url", "missing; set sink.defaults.base_url or %s.base_url (e.g. http://127.0.0.1:8081)", where)
	}
	ent.baseURL = strings.TrimRight(ent.baseURL, "/")
	if e.Timeout < 0 {
		add("timeout", "%s is negative; use a duration like 10s", e.Timeout)
	}
	if e.MaxBodyExcerpt < 0 || e.MaxBodyExcerpt > maxBodyExcerptLimit {
		add("max_body_excerpt", "%d is outside 1..%d", e.MaxBodyExcerpt, maxBodyExcerptLimit)
	}
	if e.Collection != "" && !collectionPattern.MatchString(e.Collection) {
		add("collection", "%q is not a plain path like \"listings\" or \"/api/listings\"", e.Collection)
	}
	headers, herrs := checkHeaders(where+".headers", e.Headers, lookupEnv)
	errs = append(errs, herrs...)
	ent.headers = defaultHeaders.Clone()
	if ent.headers == nil {
		ent.headers = http.Header{}
	}
	for k, v := range headers {
		ent.headers[k] = v
	}
	// Defaults the call would otherwise set on every request.
	if ent.headers.Get("Accept") == "" {
		ent.headers.Set("Accept", "application/json")
	}
	ent.headerTemplates = compileHeaderTemplates(headerOrigin(where, e.Headers), ent.headers, &errs)
	ent.batchHeaderTemplates = callHeaderTemplates(ent.headerTemplates)
	ent.bodyHeaders = ent.headers.Clone()
	if ent.bodyHeaders.Get("Content-Type") == "" {
		ent.bodyHeaders.Set("Content-Type", "application/json")
	}

	var err error
	if ent.idPath, err = parsePath(e.IDPath); err != nil {
		add("id_path", "%v", err)
	}
	for _, msg := range checkShape(where, e.ExternalIDField, e.VersionField, e.VersionHeader) {
		errs = append(errs, errors.New(msg))
	}
	shape := newBodyShape(firstNonEmpty(e.ExternalIDField, d.ExternalIDField, DefaultExternalIDField),
		firstNonEmpty(e.VersionField, d.VersionField, DefaultVersionField))
	if shape.versionField != "" && shape.versionField == shape.idField {
		add("version_field", "%q is also the external-id field (external_id_field); pick another name, or %q to leave the version out of the body", shape.versionField, VersionNone)
	}
	if h := firstNonEmpty(e.VersionHeader, d.VersionHeader); h != "" && h != VersionNone && headerNamePattern.MatchString(h) {
		ent.versionHeader = http.CanonicalHeaderKey(h)
		ent.versionETag = ent.versionHeader == "If-Match" || ent.versionHeader == "If-None-Match"
		if _, ok := ent.headers[ent.versionHeader]; ok {
			add("version_header", "%q is also set under headers, which would send it twice; remove one of them", h)
		}
	}
	ent.create = compileRequest(where+".create", opCreate, e.Create, &errs)
	ent.update = compileRequest(where+".update", opUpdate, e.Update, &errs)
	for _, op := range []*operation{ent.create, ent.update} {
		if op != nil {
			op.shape = shape
		}
	}
	ent.delete = compileRequest(where+".delete", opDelete, e.Delete, &errs)
	if e.Lookup != nil {
		l := e.Lookup
		ent.lookup = compileRequest(where+".lookup", opLookup, &Request{Method: l.Method, Path: l.Path, Body: l.Body}, &errs)
		if ent.lookupIDs, err = parsePath(l.IDs); err != nil {
			add("lookup.ids", "%v", err)
		}
	}
	if e.List != nil {
		l := e.List
		ent.list = compileRequest(where+".list", opList, &Request{Method: l.Method, Path: l.Path, Body: l.Body}, &errs)
		if ent.listItems, err = parsePath(l.Items); err != nil {
			add("list.items", "%v", err)
		}
		if ent.listID, err = parsePath(l.ID); err != nil {
			add("list.id", "%v", err)
		} else if ent.listID.multi {
			add("list.id", "%q selects many values; it must name one field of a record", l.ID)
		}
		if ent.listExternalID, err = parsePath(l.ExternalID); err != nil {
			add("list.external_id", "%v", err)
		} else if ent.listExternalID.multi {
			add("list.external_id", "%q selects many values; it must name one field of a record", l.ExternalID)
		}
		if l.PerPage < 1 || l.PerPage > 100000 {
			add("list.per_page", "%d is outside 1..100000", l.PerPage)
		}
		ent.perPage = l.PerPage
		if l.FirstPage != nil {
			ent.firstPage = *l.FirstPage
		}
		if ent.firstPage < 0 {
			add("list.first_page", "%d is negative", ent.firstPage)
		}
	}
	errs = append(errs, compileBatch(where+".batch", ent, e.Batch)...)
	if ent.idPath.multi {
		add("id_path", "%q selects many values; a create response has one id (use [0] for the first element)", e.IDPath)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return ent, nil
}

// sinkSetHeaders are headers the sink or its HTTP client set, which a
// version header must not replace.
var sinkSetHeaders = []string{"Accept", "Connection", "Content-Length", "Content-Type", "Host", "Traceparent", "Tracestate", "Transfer-Encoding"}

// checkShape checks the external-id field, version field and version
// header set at where (an entity, or the defaults); empty means unset.
func checkShape(where, idField, versionField, versionHeader string) []string {
	var msgs []string
	if idField != "" && !fieldNamePattern.MatchString(idField) {
		msgs = append(msgs, fmt.Sprintf("%s.external_id_field: %q is not a plain member name; use up to 128 letters, digits, _, -, $ or @ (e.g. external_ref)", where, idField))
	}
	if versionField != "" && versionField != VersionNone && !fieldNamePattern.MatchString(versionField) {
		msgs = append(msgs, fmt.Sprintf("%s.version_field: %q is not a plain member name; use up to 128 letters, digits, _, -, $ or @ (e.g. rev), or %q to leave the version out of the body", where, versionField, VersionNone))
	}
	switch h := versionHeader; {
	case h == "" || h == VersionNone:
	case !headerNamePattern.MatchString(h):
		msgs = append(msgs, fmt.Sprintf("%s.version_header: %q is not a valid HTTP header name; use the header your API reads the version from (e.g. X-Source-Version), or %q", where, h, VersionNone))
	case slices.Contains(sinkSetHeaders, http.CanonicalHeaderKey(h)):
		msgs = append(msgs, fmt.Sprintf("%s.version_header: %q is set by the sink itself; use the header your API reads the version from (e.g. X-Source-Version)", where, h))
	}
	return msgs
}

func checkBaseURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Sprintf("%q is not a URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Sprintf("%q must start with http:// or https://", raw)
	}
	if u.Host == "" {
		return fmt.Sprintf("%q has no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Sprintf("%q must not carry a query or fragment; put those in the request paths", raw)
	}
	return ""
}

// checkHeaders validates header names and ${NAME} references and, when
// lookupEnv is given, expands them.
func checkHeaders(where string, in map[string]string, lookupEnv func(string) (string, bool)) (http.Header, []error) {
	var errs []error
	out := http.Header{}
	for _, name := range sortedKeys(in) {
		value := in[name]
		loc := where + "." + name
		if !headerNamePattern.MatchString(name) {
			errs = append(errs, fmt.Errorf("%s: %q is not a valid HTTP header name", loc, name))
			continue
		}
		value, err := expandEnv(loc, value, lookupEnv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			errs = append(errs, fmt.Errorf("%s: value contains a line break or NUL, which HTTP headers cannot carry", loc))
			continue
		}
		out.Set(name, value)
	}
	return out, errs
}

// expandEnv checks the ${NAME} references of the setting at loc and, when
// lookupEnv is given, replaces them with the variables' values.
func expandEnv(loc, value string, lookupEnv func(string) (string, bool)) (string, error) {
	if strings.Contains(envRefPattern.ReplaceAllString(value, ""), "${") {
		return "", fmt.Errorf("%s: malformed environment reference; write ${NAME} with NAME made of letters, digits and _", loc)
	}
	if lookupEnv == nil {
		return value, nil
	}
	var missing []string
	value = envRefPattern.ReplaceAllStringFunc(value, func(ref string) string {
		v, ok := lookupEnv(ref[2 : len(ref)-1])
		if !ok {
			missing = append(missing, ref[2:len(ref)-1])
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%s: environment variable %s is not set; export it, or NAME_FILE naming a file that holds it, before starting eventsync", loc, strings.Join(missing, ", "))
	}
	return value, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
