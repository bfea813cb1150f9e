package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// view is what every page template receives.
type view struct {
	Title   string
	Nav     string // the highlighted menu entry
	Session *session
	CSRF    string // the sign-in form's token before a session exists
	Error   string
	Flash   string
	Data    any
}

// Token is the CSRF token the page's forms carry.
func (v view) Token() string {
	if v.Session != nil {
		return v.Session.CSRF
	}
	return v.CSRF
}

// pageTemplate is a page parsed with the layout.
type pageTemplate = template.Template

var pageNames = []string{"login", "error", "jobs", "job", "new", "preview", "schedules", "index"}

var funcs = template.FuncMap{
	"pct":  pct,
	"when": when,
	"secs": func(s float64) string { return (time.Duration(s * float64(time.Second))).Round(time.Second).String() },
	"dur":  func(d time.Duration) string { return d.Round(time.Second).String() },
	"join": strings.Join,
}

// when formats a time or a *time.Time for a page; "—" for none.
func when(v any) string {
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case *time.Time:
		if x != nil {
			t = *x
		}
	}
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// pct is part's share of whole in percent, for a bar's width.
func pct(part, whole int64) string {
	if whole <= 0 {
		return "0"
	}
	return fmt.Sprintf("%.2f", 100*float64(part)/float64(whole))
}

func parsePages() (map[string]*pageTemplate, error) {
	out := map[string]*pageTemplate{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/jobform.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// render writes a page; a template error is answered 500 before anything
// is sent.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, s *session, v view) {
	v.Session = s
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.ErrorContext(r.Context(), "console template", "page", name, "err", err)
		http.Error(w, "console: page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// refuse answers a request the console will not do, saying why.
func (c *Console) refuse(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	c.log.InfoContext(r.Context(), "console refused", "path", r.URL.Path, "status", status, "why", msg)
	c.render(w, r, status, "error", s, view{Title: http.StatusText(status), Error: msg})
}

// fail answers err: a backend refusal with its status, anything else 500.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *session, err error) {
	var be *Error
	if errors.As(err, &be) {
		c.refuse(w, r, s, be.Status, be.Message)
		return
	}
	c.log.ErrorContext(r.Context(), "console request failed", "path", r.URL.Path, "err", err)
	c.render(w, r, http.StatusInternalServerError, "error", s, view{Title: "Error", Error: "the request failed; the server log says why"})
}

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
