package certificate

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed certificate.html.tmpl
var htmlFS embed.FS

var page = template.Must(template.New("certificate.html.tmpl").Funcs(template.FuncMap{
	"scopeRows": scopeRows,
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return "—"
	},
}).ParseFS(htmlFS, "certificate.html.tmpl"))

// View is what the HTML rendering shows: the document, and whether its
// signature and rows were checked (Checked false: shown as unchecked).
type View struct {
	Document Document
	Checked  bool
	// Problem is why the check failed, if it did.
	Problem string
}

// RenderHTML writes a readable, printable page of a certificate for people
// who do not read JSON. It embeds no script and loads nothing.
func RenderHTML(w io.Writer, v View) error {
	return page.Execute(w, v)
}

// scopeRow is one field of a job's recorded scope, for reading.
type scopeRow struct{ Name, Value string }

// scopeRows lists the fields of a job's scope (a JSON object) by name, lists
// joined with commas and empty fields left out, so that a person reads
// "peers: a, b" rather than JSON. A scope that is not an object is shown as
// it is.
func scopeRows(raw json.RawMessage) []scopeRow {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return []scopeRow{{Name: "scope", Value: string(raw)}}
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var rows []scopeRow
	for _, k := range names {
		var v string
		switch x := m[k].(type) {
		case nil:
			continue
		case string:
			v = x
		case []any:
			parts := make([]string, 0, len(x))
			for _, e := range x {
				parts = append(parts, fmt.Sprint(e))
			}
			v = strings.Join(parts, ", ")
		case float64:
			if x == 0 {
				continue
			}
			v = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			b, _ := json.Marshal(x)
			v = string(b)
		}
		if v == "" {
			continue
		}
		rows = append(rows, scopeRow{Name: strings.ReplaceAll(k, "_", " "), Value: v})
	}
	return rows
}
