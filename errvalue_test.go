package imrecall_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/producer"
)

// TestErrorsCutALongValue: an error names a bad value, but a value of a
// megabyte (a GroupId, a user, a MsgKey, a line of a peers file) is cut
// to its start and its length: it was repeated whole, a megabyte on the
// terminal and in the API's 400 answer.
func TestErrorsCutALongValue(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("g", 1<<20)
	dir := t.TempDir()
	list := filepath.Join(dir, "l.jsonl")
	peers := filepath.Join(dir, "peers.txt")
	if err := os.WriteFile(list, []byte(`{"GroupId":"`+huge[:512<<10]+`","MsgSeq":1}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(peers, []byte("a\n"+huge[:10000]+" b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seqList := filepath.Join(dir, "seq.csv")
	if err := os.WriteFile(seqList, []byte("GroupId,MsgSeq\ng,"+strings.Repeat("g", 1000)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, listErr := producer.CheckListFile(t.Context(), list)
	_, seqErr := producer.CheckListFile(t.Context(), seqList)
	_, peersErr := imrecall.ReadPeers("", peers)
	for name, err := range map[string]error{
		"list file":  listErr,
		"MsgSeq":     seqErr,
		"peers file": peersErr,
		"user":       imrecall.UserPurge{User: huge}.Validate(),
		"GroupId":    imrecall.GroupRecall{GroupID: huge, Seqs: []int64{1}}.Validate(),
		"MsgKey":     imrecall.C2CRecall{From: "a", To: "b", MsgKey: "1_2_" + huge}.Validate(),
		"messages":   imrecall.ListRecall{Messages: []imrecall.MessageRef{{GroupID: "g", MsgSeq: 1}, {From: "a", To: "b\x00" + huge, MsgKey: "1_2_3"}}}.Validate(),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if msg := err.Error(); len(msg) > 300 || !strings.Contains(msg, "gggg\"… (") || !strings.Contains(msg, " bytes)") {
			t.Errorf("%s: error of %d bytes %.300q, want the value's start and its length", name, len(msg), msg)
		}
	}
	// Short values are shown whole, as before.
	var fe *imrecall.FieldError
	if err := (imrecall.GroupRecall{GroupID: "@TGS#1\xff", Seqs: []int64{1}}).Validate(); !errors.As(err, &fe) || err.Error() != `GroupId "@TGS#1\xff": not valid UTF-8` {
		t.Errorf("a short bad GroupId: %v", err)
	}
}
