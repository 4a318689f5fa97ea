package httpsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/template"
)

// TemplateData is what request path and body templates see. Which fields
// are set depends on the operation: create has no RemoteID, delete only
// Entity and RemoteID, lookup Entity and Key, list Entity, Page and PerPage.
type TemplateData struct {
	Entity   string
	Key      string
	Version  int64
	Data     map[string]any // the event's data, numbers kept exact
	DataJSON string         // the event's data as raw JSON
	RemoteID string
	Page     int
	PerPage  int
}

// templateFuncs is the small function map templates get: json to embed a
// value in a body, query and path to embed one in a URL.
var templateFuncs = template.FuncMap{
	"json":  jsonFunc,
	"query": url.QueryEscape,
	"path":  url.PathEscape,
}

func jsonFunc(v any) (string, error) {
	b, err := marshalJSON(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// marshalJSON encodes without HTML escaping so values reach the API as
// they were published.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

type opKind int

const (
	opCreate opKind = iota
	opUpdate
	opDelete
	opLookup
	opList
)

var opNames = [...]string{"create", "update", "delete", "lookup", "list"}

func (k opKind) String() string { return opNames[k] }

// templateField is a TemplateData field an operation may not have.
type templateField int

const (
	fieldKey templateField = iota
	fieldVersion
	fieldData
	fieldRemoteID
	fieldPage
	fieldPerPage
)

var fieldNames = [...]string{".Key", ".Version", ".Data/.DataJSON", ".RemoteID", ".Page", ".PerPage"}

// available lists the fields each operation's call provides.
var available = map[opKind][]templateField{
	opCreate: {fieldKey, fieldVersion, fieldData},
	opUpdate: {fieldKey, fieldVersion, fieldData, fieldRemoteID},
	opDelete: {fieldRemoteID},
	opLookup: {fieldKey},
	opList:   {fieldPage, fieldPerPage},
}

var allowedMethods = map[opKind][]string{
	opCreate: {http.MethodPost, http.MethodPut, http.MethodPatch},
	opUpdate: {http.MethodPut, http.MethodPatch, http.MethodPost},
	opDelete: {http.MethodDelete, http.MethodPost, http.MethodPut, http.MethodPatch},
	opLookup: {http.MethodGet, http.MethodPost},
	opList:   {http.MethodGet, http.MethodPost},
}

// operation is one compiled HTTP call.
type operation struct {
	kind   opKind
	where  string // config location for error messages
	method string
	path   *template.Template
	body   *template.Template // nil: default body (create, update) or none
}

// Sample values used to render templates at load. The key and remote id
// contain characters that break a URL or a JSON string when inserted raw, so
// a template that forgets {{.Key | path}} or {{json .Key}} is caught.
const (
	sampleKey      = `sample "key"/with?odd#chars%`
	sampleRemoteID = `sample "remote"/id?odd#chars%`
)

func sampleData(vary bool) TemplateData {
	d := TemplateData{
		Entity: "sample", Key: sampleKey, Version: 7, RemoteID: sampleRemoteID,
		Data: map[string]any{}, DataJSON: "{}", Page: 1, PerPage: 100,
	}
	if vary {
		d.Key = "other-key"
		d.Version = 8
		d.Data = map[string]any{"other": json.Number("1")}
		d.DataJSON = `{"other":1}`
		d.RemoteID = "other-remote"
		d.Page = 2
		d.PerPage = 50
	}
	return d
}

func withField(base, from TemplateData, f templateField) TemplateData {
	switch f {
	case fieldKey:
		base.Key = from.Key
	case fieldVersion:
		base.Version = from.Version
	case fieldData:
		base.Data, base.DataJSON = from.Data, from.DataJSON
	case fieldRemoteID:
		base.RemoteID = from.RemoteID
	case fieldPage:
		base.Page = from.Page
	case fieldPerPage:
		base.PerPage = from.PerPage
	}
	return base
}

// compileRequest parses and checks one operation; problems are appended to
// errs, each naming its config location.
func compileRequest(where string, kind opKind, r *Request, errs *[]error) *operation {
	if r == nil {
		if kind == opCreate || kind == opUpdate || kind == opDelete {
			*errs = append(*errs, fmt.Errorf("%s: required; configure it or set collection: to use the conventional REST routes", where))
		}
		return nil
	}
	before := len(*errs)
	add := func(field, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s.%s: %s", where, field, fmt.Sprintf(format, args...)))
	}
	op := &operation{kind: kind, where: where, method: strings.ToUpper(r.Method)}
	switch {
	case r.Method == "":
		add("method", "required (one of %s)", strings.Join(allowedMethods[kind], ", "))
	case !slices.Contains(allowedMethods[kind], op.method):
		add("method", "%q is not allowed for %s; use one of %s", r.Method, kind, strings.Join(allowedMethods[kind], ", "))
	}
	var err error
	if strings.TrimSpace(r.Path) == "" {
		add("path", "required, e.g. \"/v1/listings\"")
	} else if op.path, err = template.New("path").Funcs(templateFuncs).Parse(r.Path); err != nil {
		add("path", "template does not parse: %v", err)
	}
	if r.Body != "" {
		if op.body, err = template.New("body").Funcs(templateFuncs).Parse(r.Body); err != nil {
			add("body", "template does not parse: %v", err)
		}
	}
	if len(*errs) > before {
		return nil
	}
	checkTemplates(op, add)
	if len(*errs) > before {
		return nil
	}
	return op
}

// checkTemplates renders the templates with sample data and reports what
// would go wrong at run time.
func checkTemplates(op *operation, add func(field, format string, args ...any)) {
	sample := sampleData(false)
	other := sampleData(true)
	avail := available[op.kind]
	type part struct {
		name string
		tmpl *template.Template
	}
	parts := []part{{"path", op.path}}
	if op.body != nil {
		parts = append(parts, part{"body", op.body})
	}
	uses := map[templateField]bool{}
	for _, p := range parts {
		out, err := execute(p.tmpl, sample)
		if err != nil {
			add(p.name, "template fails with sample data: %v", err)
			continue
		}
		// A field the call does not provide would render empty at run
		// time; find it by changing one field at a time.
		for f := range fieldNames {
			field := templateField(f)
			changed, err := execute(p.tmpl, withField(sample, other, field))
			if err != nil || changed == out {
				continue
			}
			if !slices.Contains(avail, field) {
				add(p.name, "uses %s, which %s does not have (it has .Entity%s)", fieldNames[field], op.kind, listFields(avail))
			}
			uses[field] = true
		}
		switch p.name {
		case "path":
			switch {
			case strings.Contains(out, sampleKey):
				add("path", "inserts .Key unescaped; write {{.Key | path}} in the path or {{.Key | query}} in the query")
			case strings.Contains(out, sampleRemoteID):
				add("path", "inserts .RemoteID unescaped; write {{.RemoteID | path}}")
			case !strings.HasPrefix(out, "/"):
				add("path", "must start with \"/\" (it is appended to base_url); renders %q", out)
			default:
				if _, err := url.Parse("http://h" + out); err != nil {
					add("path", "does not render a valid URL path: %v", err)
				}
			}
		case "body":
			// A raw {{.Data.x}} renders "<no value>" when x is absent from
			// the sample; treat it as a number so the JSON check stays
			// meaningful for templates that insert numbers raw.
			if !json.Valid([]byte(strings.ReplaceAll(out, "<no value>", "0"))) {
				add("body", "does not render valid JSON with sample data (key %q): %s; encode values with {{json .Key}} / {{json .Data}}", sampleKey, excerptString(out, 200))
			}
		}
	}
	switch op.kind {
	case opLookup:
		if !uses[fieldKey] {
			add("path", "lookup must use .Key (e.g. ?external_id={{.Key | query}}); otherwise every lookup matches the same records")
		}
	case opList:
		if !uses[fieldPage] {
			add("path", "list must use .Page (e.g. ?page={{.Page}}&per_page={{.PerPage}}); otherwise paging never advances")
		}
	}
}

func execute(t *template.Template, data TemplateData) (string, error) {
	var buf strings.Builder
	if err := t.Execute(&buf, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

func listFields(fields []templateField) string {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(", ")
		b.WriteString(fieldNames[f])
	}
	return b.String()
}

// defaultBody is the data object with "external_id" and "version" added,
// which is what most APIs with an external-id field want.
func defaultBody(data map[string]any, key string, version int64) ([]byte, error) {
	merged := make(map[string]any, len(data)+2)
	for k, v := range data {
		merged[k] = v
	}
	merged["external_id"] = key
	merged["version"] = version
	return marshalJSON(merged)
}
