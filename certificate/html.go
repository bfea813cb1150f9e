package certificate

import (
	"embed"
	"html/template"
	"io"
	"time"
)

//go:embed certificate.html.tmpl
var htmlFS embed.FS

var page = template.Must(template.New("certificate.html.tmpl").Funcs(template.FuncMap{
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
