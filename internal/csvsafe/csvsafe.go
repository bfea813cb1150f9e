// Package csvsafe writes the CSV files imrecall gives out so that a
// spreadsheet opens every cell as text, and reads such cells back exactly.
//
// A cell that begins with = + - @, a tab or a carriage return is a formula
// to Excel, LibreOffice and Google Sheets: a group ID, an account or
// Tencent's ErrorInfo chosen by someone else could run one (=HYPERLINK,
// =WEBSERVICE, DDE) on the machine of whoever opens the export. As OWASP
// recommends ("CSV Injection"), such a cell is written with a single quote
// before it. A cell that already begins with a single quote gets one more,
// so that Cell is reversed exactly by Uncell and an exported list still
// feeds `imrecall recall file`.
package csvsafe

import (
	"encoding/csv"
	"io"
)

// Cell returns s as it is written in a CSV cell: with a single quote before
// it when it begins with = + - @, a tab, a carriage return or a single quote.
func Cell(s string) string {
	if s != "" && (isFormulaStart(s[0]) || s[0] == '\'') {
		return "'" + s
	}
	return s
}

// Uncell reverses Cell: a single quote before = + - @, a tab, a carriage
// return or another single quote is removed. Any other cell is returned as
// it is.
func Uncell(s string) string {
	if len(s) >= 2 && s[0] == '\'' && (isFormulaStart(s[1]) || s[1] == '\'') {
		return s[1:]
	}
	return s
}

func isFormulaStart(c byte) bool {
	switch c {
	case '=', '+', '-', '@', '\t', '\r':
		return true
	}
	return false
}

// Writer is a csv.Writer whose every cell goes through Cell.
type Writer struct {
	w   *csv.Writer
	rec []string
}

// NewWriter returns a Writer to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: csv.NewWriter(w)} }

// Write writes one record, each cell through Cell.
func (w *Writer) Write(record []string) error {
	w.rec = w.rec[:0]
	for _, c := range record {
		w.rec = append(w.rec, Cell(c))
	}
	return w.w.Write(w.rec)
}

// Flush writes any buffered data to the underlying io.Writer.
func (w *Writer) Flush() { w.w.Flush() }

// Error reports any error of a previous Write or Flush.
func (w *Writer) Error() error { return w.w.Error() }
