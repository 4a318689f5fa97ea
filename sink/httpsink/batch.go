package httpsink

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/eventsync/eventsync/sink"
)

// Defaults of an entity's batch block (BatchConfig).
const (
	// DefaultBatchResults is the path of the results array in a batch
	// answer.
	DefaultBatchResults = "results"
	// DefaultBatchStatus, DefaultBatchID and DefaultBatchError are paths
	// inside one result: its HTTP status, the id a create made, its error.
	DefaultBatchStatus = "status"
	DefaultBatchID     = "id"
	DefaultBatchError  = "error"
	// MaxBatchItems bounds max_items.
	MaxBatchItems = 10000
)

// BatchConfig describes an entity's bulk endpoints: one request writes many
// records of one operation and answers one result per record, in order.
// With a Collection, every operation gets the conventional route
//
//	POST {collection}/batch/create  {"items": [<create body>, ...]}
//	POST {collection}/batch/update  {"items": [{"id": "<remote id>", "record": <update body>}, ...]}
//	POST {collection}/batch/delete  {"ids": ["<remote id>", ...]}
//
// answered 200 {"results": [{"status": 201, "id": "r1"}, {"status": 404,
// "error": "..."}, ...]}, where each item's body is what the single call
// would send. Without a Collection only the operations configured here are
// batched. YAML key "batch" of an entity.
type BatchConfig struct {
	// MaxItems is the most records one call takes (1..10000; 1 means
	// single calls). Required unless every operation sets its own.
	MaxItems int           `yaml:"max_items"`
	Create   *BatchRequest `yaml:"create"`
	Update   *BatchRequest `yaml:"update"`
	Delete   *BatchRequest `yaml:"delete"`
}

// BatchRequest is one bulk call. Path is a template over .Entity; Body a
// template over BatchTemplateData (empty: the default format above).
// Results is the path of the results array in the answer ("results", "data",
// "[]" for a bare array); Status, ID and Error are paths inside one result.
type BatchRequest struct {
	// MaxItems overrides BatchConfig.MaxItems for this operation; 1 turns
	// its batching off.
	MaxItems int    `yaml:"max_items"`
	Method   string `yaml:"method"`
	Path     string `yaml:"path"`
	Body     string `yaml:"body"`
	Results  string `yaml:"results"`
	Status   string `yaml:"status"`
	// ID is the remote id a create made; create only.
	ID    string `yaml:"id"`
	Error string `yaml:"error"`
}

// BatchTemplateData is what a batch body template sees:
// {"records": [{{range $i, $it := .Items}}{{if $i}},{{end}}{{$it.Body}}{{end}}]}.
type BatchTemplateData struct {
	Entity string
	Items  []BatchItemData
}

// BatchItemData is one record of a batch call. Create items have every
// field but RemoteID; delete items only Key, RemoteID and Body.
type BatchItemData struct {
	EventID  string
	Key      string
	Version  int64
	RemoteID string
	Data     map[string]any // the event's data, numbers kept exact
	DataJSON string
	// Body is the body the single call would send (the entity's create or
	// update body, its delete body if it has one), as raw JSON: {{.Body}}
	// and {{json .Body}} insert it as is.
	Body RawJSON
}

// RawJSON is a JSON text that templates insert as is.
type RawJSON string

// MarshalJSON returns r itself ("null" when empty).
func (r RawJSON) MarshalJSON() ([]byte, error) {
	if r == "" {
		return []byte("null"), nil
	}
	return []byte(r), nil
}

var _ sink.BatchSink = (*Sink)(nil)

// batchOp is one compiled bulk call.
type batchOp struct {
	kind     opKind
	where    string // config location, e.g. sink.entities.listing.batch.create
	maxItems int
	method   string
	target   string             // base URL and rendered path
	body     *template.Template // nil: the default format
	usesData bool
	paths    batchPaths
}

// batchPaths locate the parts of a batch answer.
type batchPaths struct {
	where   string // config location for messages
	results jsonPath
	status  jsonPath
	id      jsonPath // create only
	errText jsonPath
}

// sinkOps maps the port's operations to the sink's.
var sinkOps = map[sink.Op]opKind{sink.OpCreate: opCreate, sink.OpUpdate: opUpdate, sink.OpDelete: opDelete}

// MaxBatch is the most items one WriteBatch call of op takes for entity:
// its batch max_items, or 0 when the entity has no bulk route for op.
func (s *Sink) MaxBatch(entityName string, op sink.Op) int {
	kind, ok := sinkOps[op]
	ent := s.entities[entityName]
	if !ok || ent == nil || ent.batch[kind] == nil {
		return 0
	}
	return ent.batch[kind].maxItems
}

// WriteBatch performs op on every item in one call of the entity's bulk
// route and returns one result per item, in order. An item whose body
// cannot be rendered (data that is not an object) gets the error the
// single call would return and is left out of the request. An error for
// the whole call is returned as the single calls return it, with no
// results: every item sent is then in doubt.
func (s *Sink) WriteBatch(ctx context.Context, entityName string, op sink.Op, items []sink.BatchItem) ([]sink.BatchResult, error) {
	kind, ok := sinkOps[op]
	if !ok {
		return nil, &sink.Error{Op: string(op), Err: fmt.Errorf("unknown batch operation %q; use create, update or delete", op)}
	}
	ent, err := s.entity(kind, entityName)
	if err != nil {
		return nil, err
	}
	bop := ent.batch[kind]
	switch {
	case bop == nil:
		return nil, &sink.Error{Op: kind.String(), Err: fmt.Errorf("entity %q has no bulk %s route; configure sink.entities.%s.batch.%s or use the single call (MaxBatch is 0)", entityName, kind, entityName, kind)}
	case len(items) > bop.maxItems:
		return nil, &sink.Error{Op: kind.String(), Err: fmt.Errorf("%d items in one call, over %s max_items %d", len(items), bop.where, bop.maxItems)}
	}
	results := make([]sink.BatchResult, len(items))
	data := BatchTemplateData{Entity: entityName, Items: make([]BatchItemData, 0, len(items))}
	sent := make([]int, 0, len(items)) // index in items of each item sent
	for i, it := range items {
		if it.Record.Entity != "" && it.Record.Entity != entityName {
			return nil, &sink.Error{Op: kind.String(), Err: fmt.Errorf("item %d is of entity %q in a batch of %q", i, it.Record.Entity, entityName)}
		}
		if kind != opCreate && it.RemoteID == "" {
			return nil, &sink.Error{Op: kind.String(), Err: fmt.Errorf("item %d (key %q) has no remote id to %s", i, it.Record.Key, kind)}
		}
		d, err := batchItem(ent, bop, kind, it)
		if err != nil {
			results[i].Err = err
			continue
		}
		data.Items = append(data.Items, d)
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return results, nil
	}
	body, err := batchBody(ent, bop, data)
	if err != nil {
		return nil, err
	}
	err = s.do(ctx, ent, httpCall{
		op: kind.String(), observe: "batch_" + kind.String(), where: bop.where, method: bop.method, target: bop.target, body: body,
		headers: TemplateData{Entity: entityName}, batch: true,
	}, func(resp *http.Response, answer []byte) error {
		got, err := parseBatchResults(answer, bop.paths, len(sent), ent.maxExcerpt)
		if err != nil {
			return fmt.Errorf("%w: %w", err, &sink.Error{Op: kind.String(), Status: resp.StatusCode})
		}
		for j, a := range got {
			results[sent[j]] = s.batchResult(ent, bop, a, resp)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// batchItem is the template data of one item, with the body the single
// call would send.
func batchItem(ent *entity, bop *batchOp, kind opKind, it sink.BatchItem) (BatchItemData, error) {
	if kind == opDelete {
		body, err := renderBody(ent, ent.delete, TemplateData{Entity: ent.name, RemoteID: it.RemoteID}, nil)
		return BatchItemData{Key: it.Record.Key, RemoteID: it.RemoteID, Body: RawJSON(body)}, err
	}
	op := ent.create
	if kind == opUpdate {
		op = ent.update
	}
	if bop.usesData && !op.usesData {
		// Decode the data for the batch template too.
		withData := *op
		withData.usesData = true
		op = &withData
	}
	d, body, err := recordData(op, it.Record)
	if err != nil {
		return BatchItemData{}, err
	}
	if kind == opUpdate {
		d.RemoteID = it.RemoteID
	}
	if body, err = renderBody(ent, op, d, body); err != nil {
		return BatchItemData{}, err
	}
	return BatchItemData{EventID: d.EventID, Key: d.Key, Version: d.Version, RemoteID: d.RemoteID,
		Data: d.Data, DataJSON: d.DataJSON, Body: RawJSON(body)}, nil
}

// batchBody is the request body: the default format, or bop's template
// rendered and checked to be JSON.
func batchBody(ent *entity, bop *batchOp, data BatchTemplateData) ([]byte, error) {
	if bop.body != nil {
		rendered, err := execute(bop.body, data)
		if err != nil {
			return nil, &sink.Error{Op: bop.kind.String(), Err: fmt.Errorf("render %s.body: %w", bop.where, err)}
		}
		if !json.Valid([]byte(rendered)) {
			return nil, &sink.Error{Op: bop.kind.String(), Err: fmt.Errorf("%s.body rendered invalid JSON: %s", bop.where, excerptString(rendered, ent.maxExcerpt))}
		}
		return []byte(rendered), nil
	}
	return defaultBatchBody(bop.kind, data.Items), nil
}

// defaultBatchBody is {"items": [body, ...]} for create,
// {"items": [{"id": remote id, "record": body}, ...]} for update and
// {"ids": [remote id, ...]} for delete.
func defaultBatchBody(kind opKind, items []BatchItemData) []byte {
	size := 16
	for _, it := range items {
		size += len(it.Body) + len(it.RemoteID) + 24
	}
	out := make([]byte, 0, size)
	if kind == opDelete {
		out = append(out, `{"ids":[`...)
	} else {
		out = append(out, `{"items":[`...)
	}
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		switch kind {
		case opCreate:
			out = append(out, it.Body...)
		case opUpdate:
			out = append(out, `{"id":`...)
			out = appendJSONString(out, it.RemoteID)
			out = append(out, `,"record":`...)
			out = append(out, it.Body...)
			out = append(out, '}')
		case opDelete:
			out = appendJSONString(out, it.RemoteID)
		}
	}
	return append(out, "]}"...)
}

// batchAnswer is one result of a batch answer.
type batchAnswer struct {
	status int
	id     string // the id at the id path, "" when there is none
	// detail is the result's error (a string as is, other JSON as text),
	// or the whole result when it has none: the Body of the item's error.
	detail []byte
	// raw is the whole result as JSON.
	raw []byte
}

// parseBatchResults reads a batch answer: exactly n results, each with an
// HTTP status. The error names the setting that did not match the answer.
func parseBatchResults(body []byte, p batchPaths, n, excerptLen int) ([]batchAnswer, error) {
	doc, err := decodeJSON(body)
	if err != nil {
		return nil, fmt.Errorf("batch answer is %v: got %s", err, excerptBytes(body, excerptLen))
	}
	values := p.results.eval(doc)
	if !p.results.multi {
		arr, ok := []any(nil), len(values) == 1
		if ok {
			arr, ok = values[0].([]any)
		}
		if !ok {
			return nil, fmt.Errorf("batch answer has no array at %s.results %q: got %s", p.where, p.results.raw, excerptBytes(body, excerptLen))
		}
		values = arr
	}
	if len(values) != n {
		return nil, fmt.Errorf("batch answer has %d results at %s.results %q for %d items: got %s", len(values), p.where, p.results.raw, n, excerptBytes(body, excerptLen))
	}
	out := make([]batchAnswer, n)
	for i, v := range values {
		a := &out[i]
		a.raw, _ = marshalJSON(v) // decoded JSON always encodes
		st := p.status.eval(v)
		if len(st) == 1 {
			a.status = statusCode(st[0])
		}
		if a.status == 0 {
			return nil, fmt.Errorf("batch answer's result %d has no HTTP status (100-599) at %s.status %q: got %s", i, p.where, p.status.raw, excerptBytes(a.raw, excerptLen))
		}
		if p.id.raw != "" {
			if ids := p.id.eval(v); len(ids) == 1 {
				a.id, _ = idString(ids[0])
			}
		}
		a.detail = a.raw
		if e := p.errText.eval(v); len(e) == 1 && e[0] != nil {
			if s, ok := e[0].(string); ok {
				a.detail = []byte(s)
			} else {
				a.detail, _ = marshalJSON(e[0])
			}
		}
	}
	return out, nil
}

// statusCode is an HTTP status given as a JSON integer or a string of
// digits; 0 when v is none.
func statusCode(v any) int {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case interface{ String() string }: // json.Number
		s = x.String()
	default:
		return 0
	}
	if !isDigits(s) || len(s) != 3 {
		return 0
	}
	n, _ := strconv.Atoi(s)
	if n < 100 || n > 599 {
		return 0
	}
	return n
}

// batchResult is one item's outcome as the single call would give it.
func (s *Sink) batchResult(ent *entity, bop *batchOp, a batchAnswer, resp *http.Response) sink.BatchResult {
	if a.status < 200 || a.status > 299 {
		return sink.BatchResult{Err: statusError(bop.kind.String(), a.status, s.excerpt(a.detail, ent, resp), bop.kind != opCreate)}
	}
	if bop.kind == opCreate && a.id == "" {
		// The record may exist: a retryable error lets the engine's
		// intent look it up instead of creating it again.
		return sink.BatchResult{Err: fmt.Errorf("batch create result has no string or number id at %s.id %q (fix it if the API puts the id elsewhere): %w",
			bop.where, bop.paths.id.raw, &sink.Error{Op: "create", Status: a.status, Retryable: true, Body: s.excerpt(a.raw, ent, resp)})}
	}
	return sink.BatchResult{RemoteID: a.id}
}

// withDefaults fills the batch block's unset options; base is the
// entity's collection path, "" without one. The requests are copied so
// the caller's Config is never written through.
func (b *BatchConfig) withDefaults(base string) *BatchConfig {
	if b == nil {
		return nil
	}
	out := *b
	for kind, r := range out.requests() {
		if *r == nil {
			if base == "" {
				continue
			}
			*r = &BatchRequest{}
		}
		req := **r
		req.Method = firstNonEmpty(req.Method, http.MethodPost)
		if req.Path == "" && base != "" {
			req.Path = base + "/batch/" + kind.String()
		}
		req.Results = firstNonEmpty(req.Results, DefaultBatchResults)
		req.Status = firstNonEmpty(req.Status, DefaultBatchStatus)
		req.Error = firstNonEmpty(req.Error, DefaultBatchError)
		if kind == opCreate {
			req.ID = firstNonEmpty(req.ID, DefaultBatchID)
		}
		*r = &req
	}
	return &out
}

// requests are the block's operations by kind.
func (b *BatchConfig) requests() map[opKind]**BatchRequest {
	return map[opKind]**BatchRequest{opCreate: &b.Create, opUpdate: &b.Update, opDelete: &b.Delete}
}

var batchMethods = map[opKind][]string{
	opCreate: {http.MethodPost, http.MethodPut, http.MethodPatch},
	opUpdate: {http.MethodPost, http.MethodPut, http.MethodPatch},
	opDelete: {http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete},
}

// compileBatch compiles ent's batch block (at where) into ent.batch.
func compileBatch(where string, ent *entity, b *BatchConfig) []error {
	if b == nil {
		return nil
	}
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", where, field, fmt.Sprintf(format, args...)))
	}
	if b.MaxItems < 0 || b.MaxItems > MaxBatchItems {
		add("max_items", "%d is outside 1..%d; set the most records the API takes in one bulk call", b.MaxItems, MaxBatchItems)
	}
	found := false
	for _, kind := range []opKind{opCreate, opUpdate, opDelete} {
		r := *b.requests()[kind]
		if r == nil {
			continue
		}
		found = true
		if op := compileBatchOp(where+"."+kind.String(), kind, ent, b.MaxItems, r, &errs); op != nil {
			ent.batch[kind] = op
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("%s: no bulk route; set the entity's collection: for the conventional {collection}/batch/create, /batch/update and /batch/delete, or configure batch.create, batch.update or batch.delete with a path", where))
	}
	return errs
}

func compileBatchOp(where string, kind opKind, ent *entity, maxItems int, r *BatchRequest, errs *[]error) *batchOp {
	before := len(*errs)
	add := func(field, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%s.%s: %s", where, field, fmt.Sprintf(format, args...)))
	}
	op := &batchOp{kind: kind, where: where, method: strings.ToUpper(r.Method), maxItems: maxItems}
	switch {
	case r.MaxItems < 0 || r.MaxItems > MaxBatchItems:
		add("max_items", "%d is outside 1..%d; set the most records the API takes in one bulk %s", r.MaxItems, MaxBatchItems, kind)
	case r.MaxItems > 0:
		op.maxItems = r.MaxItems
	case maxItems == 0:
		add("max_items", "required; set batch.max_items (or batch.%s.max_items) to the most records the API takes in one bulk call, e.g. 100", kind)
	}
	if !slices.Contains(batchMethods[kind], op.method) {
		add("method", "%q is not allowed for a bulk %s; use one of %s", r.Method, kind, strings.Join(batchMethods[kind], ", "))
	}
	if strings.TrimSpace(r.Path) == "" {
		add("path", "required without a collection, e.g. \"/v1/listings/batch/%s\"", kind)
	} else if t, err := template.New("path").Funcs(templateFuncs).Option("missingkey=error").Parse(r.Path); err != nil {
		add("path", "template does not parse: %v", err)
	} else {
		path, err := execute(t, struct{ Entity string }{ent.name})
		switch {
		case err != nil:
			add("path", "template fails: %v; a bulk path is one for the whole call and may use .Entity only", err)
		case !strings.HasPrefix(path, "/"):
			add("path", "must start with \"/\" (it is appended to base_url); renders %q", path)
		default:
			if _, err := url.Parse("http://h" + path); err != nil {
				add("path", "does not render a valid URL path: %v", err)
			}
			op.target = ent.baseURL + path
		}
	}
	if r.Body != "" {
		t, err := template.New("body").Funcs(templateFuncs).Parse(r.Body)
		if err != nil {
			add("body", "template does not parse: %v", err)
		} else {
			op.body = t
			op.usesData = batchUsesData(t.Tree.Root)
			checkBatchBody(op, add)
		}
	}
	op.paths.where = where
	parse := func(field, raw string, single bool) jsonPath {
		p, err := parsePath(raw)
		switch {
		case err != nil:
			add(field, "%v", err)
		case single && p.multi:
			add(field, "%q selects many values; it must name one field of a result (e.g. %q)", raw, "status")
		}
		return p
	}
	op.paths.results = parse("results", r.Results, false)
	op.paths.status = parse("status", r.Status, true)
	op.paths.errText = parse("error", r.Error, true)
	switch {
	case kind == opCreate:
		op.paths.id = parse("id", r.ID, true)
	case r.ID != "":
		add("id", "only a bulk create's results carry a new id; remove it")
	}
	if len(*errs) > before {
		return nil
	}
	return op
}

// batchFields are the item fields each bulk operation's items have.
var batchFields = map[opKind][]string{
	opCreate: {"EventID", "Key", "Version", "Data", "Body"},
	opUpdate: {"EventID", "Key", "Version", "Data", "Body", "RemoteID"},
	opDelete: {"Key", "RemoteID", "Body"},
}

// checkBatchBody renders a batch body template with sample items and
// reports what would go wrong at run time.
func checkBatchBody(op *batchOp, add func(field, format string, args ...any)) {
	sample := sampleBatch("")
	out, err := execute(op.body, sample)
	if err != nil {
		add("body", "template fails with sample items: %v", err)
		return
	}
	if !json.Valid([]byte(strings.ReplaceAll(out, "<no value>", "0"))) {
		add("body", "does not render valid JSON with sample items (key %q): %s; insert each item's single-call body with {{.Body}} and encode values with {{json .Key}}", sampleKey, excerptString(out, 200))
		return
	}
	if none, err := execute(op.body, BatchTemplateData{Entity: sample.Entity}); err == nil && none == out {
		add("body", "does not use .Items; range over them, e.g. {\"records\": [{{range $i, $it := .Items}}{{if $i}},{{end}}{{$it.Body}}{{end}}]}")
		return
	}
	for _, field := range []string{"EventID", "Key", "Version", "Data", "Body", "RemoteID"} {
		changed, err := execute(op.body, sampleBatch(field))
		if err != nil || changed == out || slices.Contains(batchFields[op.kind], field) {
			continue
		}
		add("body", "uses the items' .%s, which a bulk %s does not have (its items have .%s)", field, op.kind, strings.Join(batchFields[op.kind], ", ."))
	}
}

// sampleBatch is two sample items with odd characters; vary changes that
// field of every item.
func sampleBatch(vary string) BatchTemplateData {
	d := BatchTemplateData{Entity: "sample"}
	for i := range 2 {
		it := BatchItemData{
			EventID: "01J0SAMPLEEVENTID" + strconv.Itoa(i), Key: sampleKey + strconv.Itoa(i), Version: int64(7 + i),
			RemoteID: sampleRemoteID + strconv.Itoa(i), Data: map[string]any{}, DataJSON: "{}", Body: `{"sample":true}`,
		}
		switch vary {
		case "EventID":
			it.EventID += "x"
		case "Key":
			it.Key += "x"
		case "Version":
			it.Version += 10
		case "Data":
			it.Data, it.DataJSON = map[string]any{"other": "1"}, `{"other":"1"}`
		case "Body":
			it.Body = `{"other":true}`
		case "RemoteID":
			it.RemoteID += "x"
		}
		d.Items = append(d.Items, it)
	}
	return d
}

// batchUsesData reports whether a batch body template may read an item's
// .Data or .DataJSON, so that items are decoded only for templates that
// do. Unlike usesData it cannot trust variables ($it in range $i, $it :=
// .Items holds an item): any field named Data or DataJSON, any dot and any
// whole variable but a range's index counts.
func batchUsesData(root parse.Node) bool {
	indexes := map[string]bool{}
	found := false
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		if found || n == nil || reflect.ValueOf(n).IsNil() {
			return
		}
		isData := func(idents []string) bool {
			return slices.Contains(idents, "Data") || slices.Contains(idents, "DataJSON")
		}
		switch n := n.(type) {
		case *parse.DotNode:
			found = true
		case *parse.FieldNode:
			found = isData(n.Ident)
		case *parse.VariableNode:
			found = isData(n.Ident) || len(n.Ident) == 1 && !indexes[n.Ident[0]]
		case *parse.ChainNode:
			found = isData(n.Field)
			walk(n.Node)
		case *parse.ListNode:
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.RangeNode:
			if len(n.Pipe.Decl) == 2 {
				indexes[n.Pipe.Decl[0].Ident[0]] = true
			}
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			found = true // another template sees what it is given
		case *parse.TextNode, *parse.CommentNode, *parse.BoolNode, *parse.NumberNode, *parse.StringNode,
			*parse.NilNode, *parse.IdentifierNode, *parse.BreakNode, *parse.ContinueNode:
		default:
			found = true // a node this function does not know
		}
	}
	walk(root)
	return found
}

// callHeaderTemplates are the header templates a batch call sends: those
// that do not depend on one record (.EventID, .Key, .Version, .RemoteID),
// which a call of many records does not have.
func callHeaderTemplates(templates []headerTemplate) []headerTemplate {
	var out []headerTemplate
	sample := sampleData(false)
	other := sampleData(true)
	for _, ht := range templates {
		a, errA := execute(ht.tmpl, TemplateData{Entity: sample.Entity})
		b, errB := execute(ht.tmpl, TemplateData{Entity: sample.Entity, EventID: "other", Key: other.Key, Version: other.Version, RemoteID: other.RemoteID})
		if errA == nil && errB == nil && a == b {
			out = append(out, ht)
		}
	}
	return out
}

// batchPathsOf lists the bulk paths of e, for the sink's scrubber.
func batchPathsOf(e EntityConfig) []string {
	if e.Batch == nil {
		return nil
	}
	var out []string
	for _, r := range []*BatchRequest{e.Batch.Create, e.Batch.Update, e.Batch.Delete} {
		if r != nil {
			out = append(out, r.Path)
		}
	}
	return out
}
