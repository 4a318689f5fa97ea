package httpsink

import (
	"fmt"
	"net/http"
	"strings"
	"text/template"
)

// headerTemplate is a header whose value is rendered per request.
type headerTemplate struct {
	name string // canonical
	tmpl *template.Template
}

// compileHeaderTemplates moves the headers whose value holds "{{" out of
// headers into templates over TemplateData, checked by rendering them with
// sample data. They may not read .Data: a header is no place for the
// record's state, and the data is decoded only when a path or body needs
// it.
func compileHeaderTemplates(where func(name string) string, headers http.Header, errs *[]error) []headerTemplate {
	var out []headerTemplate
	for _, name := range sortedKeys(headers) {
		value := headers.Get(name)
		if !strings.Contains(value, "{{") {
			continue
		}
		headers.Del(name)
		loc := where(name)
		t, err := template.New(name).Funcs(templateFuncs).Option("missingkey=error").Parse(value)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: template does not parse: %w", loc, err))
			continue
		}
		if usesData(t) {
			*errs = append(*errs, fmt.Errorf("%s: a header template cannot read .Data or .DataJSON; use .EventID, .Entity, .Key, .Version or .RemoteID", loc))
			continue
		}
		sample := sampleData(false)
		sample.EventID = "01J0SAMPLEEVENTID"
		rendered, err := execute(t, sample)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: template fails on sample data: %w", loc, err))
			continue
		}
		if strings.ContainsAny(rendered, "\r\n\x00") {
			*errs = append(*errs, fmt.Errorf("%s: renders a line break or NUL, which HTTP headers cannot carry", loc))
			continue
		}
		out = append(out, headerTemplate{name: http.CanonicalHeaderKey(name), tmpl: t})
	}
	return out
}

// headerOrigin names where a header of entity (at where) was configured:
// its own headers, or the defaults'.
func headerOrigin(where string, own map[string]string) func(string) string {
	return func(name string) string {
		for k := range own {
			if strings.EqualFold(k, name) {
				return where + ".headers." + k
			}
		}
		return "sink.defaults.headers." + name
	}
}

// renderHeaders sets the rendered template headers on h; one that renders
// empty (.EventID on a delete) is left out.
func renderHeaders(h http.Header, templates []headerTemplate, data TemplateData) error {
	for _, ht := range templates {
		v, err := execute(ht.tmpl, data)
		if err != nil {
			return fmt.Errorf("render header %s: %w", ht.name, err)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("header %s rendered a line break or NUL for key %q", ht.name, data.Key)
		}
		if v != "" {
			h.Set(ht.name, v)
		}
	}
	return nil
}
