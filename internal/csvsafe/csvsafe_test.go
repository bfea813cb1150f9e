package csvsafe

import (
	"bytes"
	"encoding/csv"
	"testing"
)

func TestCellRoundTrip(t *testing.T) {
	tests := []struct{ in, cell string }{
		{"", ""},
		{"@TGS#1", "'@TGS#1"},
		{"=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"},
		{"+1", "'+1"},
		{"-2+3", "'-2+3"},
		{"\t=1", "'\t=1"},
		{"\r=1", "'\r=1"},
		{"'=1", "''=1"},
		{"'", "''"},
		{"'abc", "''abc"},
		{"group=1", "group=1"},
		{"42", "42"},
	}
	for _, tt := range tests {
		if got := Cell(tt.in); got != tt.cell {
			t.Errorf("Cell(%q) = %q, want %q", tt.in, got, tt.cell)
		}
		if got := Uncell(Cell(tt.in)); got != tt.in {
			t.Errorf("Uncell(Cell(%q)) = %q", tt.in, got)
		}
	}
}

func TestWriterQuotesEveryCell(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	if err := w.Write([]string{"=1+1", "ok", "@x"}); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		t.Fatal(err)
	}
	rec, err := csv.NewReader(&b).Read()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"'=1+1", "ok", "'@x"}; len(rec) != 3 || rec[0] != want[0] || rec[1] != want[1] || rec[2] != want[2] {
		t.Fatalf("record = %q, want %q", rec, want)
	}
}
