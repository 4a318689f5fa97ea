package httpsink

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
)

// TemplateData is what request path, body and header templates see. Which
// fields are set depends on the operation: create has no RemoteID, delete
// only Entity and RemoteID, lookup Entity and Key, list Entity, Page and
// PerPage. EventID, the id of the event being applied, is set on create
// and update.
type TemplateData struct {
	EventID  string
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
// value in a body, query and path to embed one in a URL, merge to add
// members to an object.
var templateFuncs = template.FuncMap{
	"json":  jsonFunc,
	"query": url.QueryEscape,
	"path":  url.PathEscape,
	"merge": mergeFunc,
}

// mergeFunc returns a copy of the object obj with members set from
// name-value pairs, replacing members of those names:
// {{ merge .Data "external_ref" .Key "rev" .Version | json }}. obj is .Data,
// a member of it holding an object, the result of another merge, or nil (an
// absent member: an empty object). obj itself is not changed.
func mergeFunc(obj any, pairs ...any) (map[string]any, error) {
	var src map[string]any
	switch o := obj.(type) {
	case nil:
	case map[string]any:
		src = o
	default:
		return nil, fmt.Errorf("merge: first argument is %T, not an object; pass .Data or a member of it that holds an object", obj)
	}
	if len(pairs)%2 != 0 {
		return nil, fmt.Errorf("merge: %d arguments after the object; give name-value pairs, e.g. merge .Data \"external_ref\" .Key", len(pairs))
	}
	out := make(map[string]any, len(src)+len(pairs)/2)
	for k, v := range src {
		out[k] = v
	}
	for i := 0; i < len(pairs); i += 2 {
		name, ok := pairs[i].(string)
		if !ok {
			return nil, fmt.Errorf("merge: argument %d is %T, not a member name; member names are quoted strings", i+2, pairs[i])
		}
		out[name] = pairs[i+1]
	}
	return out, nil
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
	// usesData is whether path or body may read .Data or .DataJSON.
	usesData bool
	// plainPath is path as parts when it is that simple (compilePlain).
	plainPath []plainPart
	// shape is where a create's or update's default body puts the key and
	// version; nil means defaultShape.
	shape *bodyShape
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
	op.usesData = usesData(op.path) || op.body != nil && usesData(op.body)
	op.plainPath = compilePlain(op.path)
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

func execute(t *template.Template, data any) (string, error) {
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

// mapBody is the default body built from decoded data: the data object
// with the shape's external-id and version members set, which is what most
// APIs with an external-id field want. bodyShape.splice builds the same
// from data's bytes; this is for the data it leaves alone.
func (s *bodyShape) mapBody(data map[string]any, key string, version int64) ([]byte, error) {
	merged := make(map[string]any, len(data)+2)
	for k, v := range data {
		merged[k] = v
	}
	merged[s.idField] = key
	if s.versionField != "" {
		merged[s.versionField] = version
	}
	return marshalJSON(merged)
}

// usesData reports whether t may read .Data or .DataJSON, so that a call
// whose templates do not skips decoding the event's data. It errs towards
// yes: any use of the whole dot (passed to a function or a template, or
// under with and range) counts.
func usesData(t *template.Template) bool {
	for _, tt := range t.Templates() {
		if tt.Tree != nil && nodeUsesData(tt.Tree.Root) {
			return true
		}
	}
	return false
}

func nodeUsesData(n parse.Node) bool {
	isData := func(ident []string, first int) bool {
		return len(ident) <= first || ident[first] == "Data" || ident[first] == "DataJSON"
	}
	switch n := n.(type) {
	case nil:
		return false
	case *parse.TextNode, *parse.CommentNode, *parse.BoolNode, *parse.NumberNode, *parse.StringNode,
		*parse.NilNode, *parse.IdentifierNode, *parse.BreakNode, *parse.ContinueNode:
		return false
	case *parse.DotNode:
		return true
	case *parse.FieldNode:
		return isData(n.Ident, 0)
	case *parse.VariableNode:
		return n.Ident[0] == "$" && isData(n.Ident, 1)
	case *parse.ChainNode:
		return nodeUsesData(n.Node)
	case *parse.ListNode:
		return n != nil && slices.ContainsFunc(n.Nodes, nodeUsesData)
	case *parse.ActionNode:
		return nodeUsesData(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return false
		}
		for _, c := range n.Cmds {
			if slices.ContainsFunc(c.Args, nodeUsesData) {
				return true
			}
		}
		return false
	case *parse.CommandNode:
		return slices.ContainsFunc(n.Args, nodeUsesData)
	case *parse.IfNode:
		return branchUsesData(&n.BranchNode)
	case *parse.RangeNode:
		return branchUsesData(&n.BranchNode)
	case *parse.WithNode:
		return branchUsesData(&n.BranchNode)
	case *parse.TemplateNode:
		return nodeUsesData(n.Pipe)
	}
	return true // a node this function does not know
}

func branchUsesData(b *parse.BranchNode) bool {
	return nodeUsesData(b.Pipe) || nodeUsesData(b.List) || nodeUsesData(b.ElseList)
}

// plainPart is text, or one field of TemplateData (str or num) optionally
// escaped by path or query.
type plainPart struct {
	text   string
	str    func(*TemplateData) string
	num    func(*TemplateData) int64
	escape func(string) string
}

var (
	plainStrings = map[string]func(*TemplateData) string{
		"Entity":   func(d *TemplateData) string { return d.Entity },
		"Key":      func(d *TemplateData) string { return d.Key },
		"RemoteID": func(d *TemplateData) string { return d.RemoteID },
	}
	plainNumbers = map[string]func(*TemplateData) int64{
		"Version": func(d *TemplateData) int64 { return d.Version },
		"Page":    func(d *TemplateData) int64 { return int64(d.Page) },
		"PerPage": func(d *TemplateData) int64 { return int64(d.PerPage) },
	}
	plainEscapes = map[string]func(string) string{"path": url.PathEscape, "query": url.QueryEscape}
)

// compilePlain turns a template made only of text and the actions
// {{.F}}, {{.F | path}}, {{path .F}} (and query alike) on the scalar fields
// of TemplateData into parts that render without text/template's
// reflection, which is most of the cost of a default route's path. It
// returns nil for any other template (FuzzPlainPathAgreesWithTemplate).
func compilePlain(t *template.Template) []plainPart {
	if t == nil || t.Tree == nil || t.Tree.Root == nil {
		return nil
	}
	var parts []plainPart
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, plainPart{text: string(n.Text)})
		case *parse.ActionNode:
			p, ok := plainAction(n.Pipe)
			if !ok {
				return nil
			}
			parts = append(parts, p)
		default:
			return nil
		}
	}
	if parts == nil {
		parts = []plainPart{} // an empty path still renders
	}
	return parts
}

func plainAction(pipe *parse.PipeNode) (plainPart, bool) {
	if pipe == nil || len(pipe.Decl) > 0 || pipe.IsAssign {
		return plainPart{}, false
	}
	var field, escape string
	switch cmds := pipe.Cmds; {
	case len(cmds) == 1 && len(cmds[0].Args) == 1: // {{.F}}
		field = fieldName(cmds[0].Args[0])
	case len(cmds) == 1 && len(cmds[0].Args) == 2: // {{path .F}}
		escape, field = identName(cmds[0].Args[0]), fieldName(cmds[0].Args[1])
	case len(cmds) == 2 && len(cmds[0].Args) == 1 && len(cmds[1].Args) == 1: // {{.F | path}}
		field, escape = fieldName(cmds[0].Args[0]), identName(cmds[1].Args[0])
	}
	if len(pipe.Cmds) > 1 || len(pipe.Cmds) == 1 && len(pipe.Cmds[0].Args) > 1 {
		if escape == "" {
			return plainPart{}, false // the second operand is no function
		}
	}
	p := plainPart{str: plainStrings[field], num: plainNumbers[field], escape: plainEscapes[escape]}
	switch {
	case p.str == nil && p.num == nil, escape != "" && p.escape == nil:
		return plainPart{}, false
	case p.num != nil && escape != "":
		return plainPart{}, false // text/template refuses a number for a string argument
	}
	return p, true
}

func fieldName(n parse.Node) string {
	if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) == 1 {
		return f.Ident[0]
	}
	return ""
}

func identName(n parse.Node) string {
	if id, ok := n.(*parse.IdentifierNode); ok {
		return id.Ident
	}
	return ""
}

// renderPlain appends parts rendered with d to prefix.
func renderPlain(prefix string, parts []plainPart, d TemplateData) string {
	var b strings.Builder
	b.Grow(len(prefix) + 64)
	b.WriteString(prefix)
	var num [20]byte
	for _, p := range parts {
		switch {
		case p.num != nil:
			b.Write(strconv.AppendInt(num[:0], p.num(&d), 10))
		case p.str == nil:
			b.WriteString(p.text)
		case p.escape != nil:
			b.WriteString(p.escape(p.str(&d)))
		default:
			b.WriteString(p.str(&d))
		}
	}
	return b.String()
}
