package producer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadListRejects(t *testing.T) {
	tests := []struct {
		name, file, body string
		line             int
		want             string
	}{
		{"bad json", "a.jsonl", `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"g","MsgSeq":` + "\n", 2, "not a JSON object"},
		{"non-numeric seq", "a.jsonl", `{"GroupId":"g","MsgSeq":"abc"}`, 1, "MsgSeq"},
		{"negative seq", "a.jsonl", "\n\n" + `{"GroupId":"g","MsgSeq":-5}`, 3, "MsgSeq: -5 must be positive"},
		{"fractional seq", "a.jsonl", `{"GroupId":"g","MsgSeq":1.5}`, 1, "not a whole number"},
		{"missing seq", "a.jsonl", `{"GroupId":"g"}`, 1, "MsgSeq: required"},
		{"missing to", "a.jsonl", `{"From_Account":"a","MsgKey":"1_2_3"}`, 1, "To_Account: required"},
		{"missing everything", "a.jsonl", `{"Foo":1}`, 1, "no message"},
		{"bad msgkey", "a.jsonl", `{"From_Account":"a","To_Account":"b","MsgKey":"xyz"}`, 1, "MsgKey"},
		{"wrong type", "a.jsonl", `{"GroupId":12,"MsgSeq":1}`, 1, "GroupId: want a string"},
		{"csv bad seq", "a.csv", "GroupId,MsgSeq\ng,1\ng,x\n", 3, "MsgSeq"},
		{"csv no columns", "a.csv", "foo,bar\n1,2\n", 1, "CSV header"},
		// Which of two GroupId columns names the group? The last one was
		// taken, and the dry run does not show which group it planned.
		{"csv column named twice", "a.csv", "GroupId,MsgSeq,GroupId\ng1,1,g2\n", 1, "CSV header: column GroupId appears twice (columns 1 and 3)"},
		{"csv column named twice, spaced", "a.csv", "From_Account,To_Account,MsgKey, MsgKey\na,b,1_2_3,4_5_6\n", 1, "column MsgKey appears twice (columns 3 and 4)"},
		{"csv missing field", "a.csv", "From_Account,To_Account,MsgKey\na,,1_2_3\n", 2, "To_Account: required"},
		// A task's JSON payload carries U+FFFD for bad bytes: the worker
		// would meet another ID than the one planned, and the job never end.
		// An empty cell named nothing: "MsgSeq:  is not a whole number".
		{"csv seq missing", "a.csv", "GroupId,MsgSeq\ng,1\ng\n", 3, "MsgSeq: required with GroupId"},
		{"csv seq empty", "a.csv", "GroupId,MsgSeq\ng, \n", 2, "MsgSeq: required with GroupId"},
		{"csv seq with a plus sign", "a.csv", "GroupId,MsgSeq\ng,+7\n", 2, "MsgSeq: +7 is not a whole number"},
		{"csv GroupId over MaxIDLen", "a.csv", "GroupId,MsgSeq\n" + strings.Repeat("g", 1025) + ",1\n", 2, "1025 bytes, longer than 1024"},
		{"csv GroupId not UTF-8", "a.csv", "GroupId,MsgSeq\ng,1\n@TGS#1\xff\xfe,2\n", 3, `GroupId "@TGS#1\xff\xfe": not valid UTF-8`},
		{"csv From_Account not UTF-8", "a.csv", "From_Account,To_Account,MsgKey\na\xff,b,1_2_3\n", 2, `From_Account "a\xff": not valid UTF-8`},
		{"jsonl TopicId with a NUL", "a.jsonl", `{"GroupId":"g","TopicId":"t\u0000","MsgSeq":1}`, 1, "TopicId \"t\\x00\": holds a control character (U+0000)"},
		{"csv To_Account with a line break", "a.csv", "From_Account,To_Account,MsgKey\na,\"b\nc\",1_2_3\n", 2, "To_Account \"b\\nc\": holds a control character (U+000A)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, tc.file, tc.body)
			_, err := CheckListFile(t.Context(), p)
			var le *LineError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v, want a *LineError", err)
			}
			if le.Line != tc.line || le.File != p || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %s:%d containing %q", err, p, tc.line, tc.want)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("%s:%d: ", p, tc.line)) {
				t.Fatalf("err = %q, want it to start with file:line", err)
			}
		})
	}
}

func TestReadListFormats(t *testing.T) {
	jsonl := `{"CallbackCommand":"Group.CallbackAfterSendMsg","GroupId":"@TGS#1","MsgSeq":100,"From_Account":"spam","MsgBody":[]}
{"GroupId":"@TGS#2","TopicId":"@TGS#2@TOPIC#a","MsgSeq":7}

{"CallbackCommand":"C2C.CallbackAfterSendMsg","From_Account":"spam","To_Account":"bob","MsgKey":"1_2_3","MsgSeq":1}
`
	csvBody := "GroupId,MsgSeq,TopicId,From_Account,To_Account,MsgKey\n@TGS#1,100,,,,\n@TGS#2,7,@TGS#2@TOPIC#a,,,\n,,,spam,bob,1_2_3\n"
	want := []Message{
		{GroupID: "@TGS#1", MsgSeq: 100, From: "spam"},
		{GroupID: "@TGS#2", TopicID: "@TGS#2@TOPIC#a", MsgSeq: 7},
		{From: "spam", To: "bob", MsgKey: "1_2_3"},
	}
	// A byte order mark (as some Windows editors write) is skipped in both.
	for name, body := range map[string]string{"list.jsonl": jsonl, "list.csv": csvBody, "bom.jsonl": "\ufeff" + jsonl, "bom.csv": "\ufeff" + csvBody} {
		t.Run(name, func(t *testing.T) {
			f, _ := os.Open(writeFile(t, name, body))
			defer f.Close()
			var got []Message
			err := ReadList(t.Context(), f, name, func(_ int, m Message) error { got = append(got, m); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("got %d messages %+v, want %d", len(got), got, len(want))
			}
			for i := range want {
				w := want[i]
				if strings.HasSuffix(name, ".csv") && i == 0 {
					w.From = ""
				}
				if got[i] != w {
					t.Errorf("message %d = %+v, want %+v", i, got[i], w)
				}
			}
		})
	}
}

func TestPlanListChunksAndDedups(t *testing.T) {
	ctx := t.Context()
	store, client, insp := onMiniredis(t)

	var b strings.Builder
	// Group a: 25 seqs interleaved with group b: 10 seqs, each written twice.
	for round := 0; round < 2; round++ {
		for i := 1; i <= 25; i++ {
			fmt.Fprintf(&b, `{"GroupId":"a","MsgSeq":%d}`+"\n", i)
			if i <= 10 {
				fmt.Fprintf(&b, `{"GroupId":"b","MsgSeq":%d}`+"\n", i)
			}
		}
	}
	b.WriteString(`{"From_Account":"x","To_Account":"y","MsgKey":"1_1_1"}` + "\n")
	b.WriteString(`{"From_Account":"x","To_Account":"y","MsgKey":"1_1_1"}` + "\n")
	path := writeFile(t, "l.jsonl", b.String())

	job, err := store.Create(ctx, jobs.Spec{Kind: "recall:list", Queue: tasks.QueuePurge, AppID: 1, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	bt, err := PlanList(ctx, store, client, job, path)
	if err != nil {
		t.Fatal(err)
	}
	if bt.Seen != 72 || bt.Planned != 36 {
		t.Fatalf("seen %d planned %d, want 72 and 36", bt.Seen, bt.Planned)
	}
	got, _ := store.Get(ctx, job.ID)
	if got.Counts.Planned != 36 || got.Status != jobs.StatusRunning {
		t.Fatalf("job = %+v", got)
	}

	infos, err := insp.ListPendingTasks(tasks.QueuePurge, asynq.PageSize(100))
	if err != nil {
		t.Fatal(err)
	}
	c2c, err := insp.ListPendingTasks(tasks.C2CQueue(tasks.QueuePurge), asynq.PageSize(100))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range infos {
		if ti.Type != tasks.TypeGroupRecall {
			t.Errorf("a %s task on the group recall queue", ti.Type)
		}
	}
	infos = append(infos, c2c...)
	sizes := map[string][]int{}
	for _, ti := range infos {
		switch ti.Type {
		case tasks.TypeGroupRecall:
			p, err := tasks.DecodeGroupRecall(asynq.NewTask(ti.Type, ti.Payload))
			if err != nil {
				t.Fatal(err)
			}
			sizes[p.GroupID] = append(sizes[p.GroupID], len(p.Seqs))
		case tasks.TypeC2CWithdraw:
			sizes["c2c"] = append(sizes["c2c"], 1)
		}
	}
	// a: 25 seqs = 10 + 10 + 5; b: exactly one call of 10; one c2c task.
	if fmt.Sprint(sizes["a"]) != "[10 10 5]" || fmt.Sprint(sizes["b"]) != "[10]" || fmt.Sprint(sizes["c2c"]) != "[1]" {
		t.Fatalf("task sizes = %v", sizes)
	}

	// Planning the same file again into the same job enqueues nothing.
	job2, _ := store.Get(ctx, job.ID)
	if _, err := PlanList(ctx, store, client, job2, path); !errors.Is(err, jobs.ErrClosed) {
		t.Fatalf("re-planning a closed job: err = %v, want ErrClosed", err)
	}
}

// TestSpoolHasNoName: the spool of a list file is unlinked as soon as it is
// created, so a process killed while planning (SIGKILL runs no cleanup)
// leaves no copy of the list's user and group ids in the directory; the
// open spool still reads back exactly the bytes that were checked, and a
// bad list leaves no spool either.
func TestSpoolHasNoName(t *testing.T) {
	dir, spools := t.TempDir(), t.TempDir()
	list := filepath.Join(dir, "l.jsonl")
	body := "{\"GroupId\":\"@TGS#1\",\"MsgSeq\":1}\n{\"From_Account\":\"alice\",\"To_Account\":\"bob\",\"MsgKey\":\"1_2_3\"}\n"
	if err := os.WriteFile(list, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	spool, sum, err := SpoolListFile(t.Context(), list, spools)
	if err != nil || sum.Messages != 2 {
		t.Fatalf("SpoolListFile = %+v, %v", sum, err)
	}
	defer spool.Close()
	if left, _ := os.ReadDir(spools); len(left) != 0 {
		t.Fatalf("the spool has a name while it is open: %v", left)
	}
	got, err := io.ReadAll(spool)
	if err != nil || string(got) != body {
		t.Fatalf("the spool reads %q, %v; want the list's bytes", got, err)
	}
	if err := os.WriteFile(list, []byte(body+"not json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var le *LineError
	if _, _, err := SpoolListFile(t.Context(), list, spools); !errors.As(err, &le) || le.Line != 3 {
		t.Fatalf("a bad list: %v, want a *LineError at line 3", err)
	}
	if left, _ := os.ReadDir(spools); len(left) != 0 {
		t.Fatalf("a bad list left a spool: %v", left)
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestReadListBoundsALine: a line longer than maxLine is a *LineError
// naming it, read no further than the bound, in CSV as in JSON Lines. A
// CSV record had no bound: a list with one 200 MB cell took 2 GB before
// its check said anything (a cell without its closing quote, the rest of
// the file). A quoted cell's line breaks are part of its record.
func TestReadListBoundsALine(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("x", 8<<20)
	for _, tc := range []struct {
		name, head, tail string
		line             int
	}{
		{"jsonl", `{"GroupId":"g","MsgSeq":1}` + "\n" + `{"GroupId":"`, "\",\"MsgSeq\":2}\n", 2},
		{"csv cell", "GroupId,MsgSeq\ng,1\n", ",2\n", 3},
		{"csv quoted cell", "GroupId,MsgSeq\r\ng,1\r\n\"", "\",2\r\n", 3},
		{"csv quoted cell of many lines", "GroupId,MsgSeq\ng,1\n\"a\nb\n", "\n\",2\n", 3},
		{"csv header", "GroupId,MsgSeq,", "\ng,1\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.head + huge + tc.tail
			if tc.name == "csv quoted cell of many lines" {
				body = tc.head + strings.Repeat("x\n", 4<<20) + tc.tail
			}
			r := &countingReader{r: strings.NewReader(body)}
			err := ReadList(t.Context(), r, "list", func(int, Message) error { return nil })
			var le *LineError
			if !errors.As(err, &le) || le.Line != tc.line || !strings.Contains(err.Error(), fmt.Sprintf("longer than %d bytes", maxLine)) {
				t.Fatalf("err = %.200v, want list:%d: … longer than %d bytes", err, tc.line, maxLine)
			}
			if r.n > 2*maxLine {
				t.Errorf("read %d bytes of a %d-byte list to refuse it, want at most %d", r.n, len(body), 2*maxLine)
			}
		})
	}
}
