package tasks

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
)

func TestGroupRecallValidate(t *testing.T) {
	ok := GroupRecall{JobID: "j1", AppID: 1400000001, GroupID: "@TGS#1", Seqs: []int64{1, 2, 3}}
	tests := []struct {
		name   string
		mutate func(*GroupRecall)
		want   string // substring of the error; "" = valid
	}{
		{"valid", func(*GroupRecall) {}, ""},
		{"ten seqs", func(p *GroupRecall) { p.Seqs = []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10} }, ""},
		{"no job", func(p *GroupRecall) { p.JobID = "" }, "job_id"},
		{"no app", func(p *GroupRecall) { p.AppID = 0 }, "sdkappid"},
		{"no group", func(p *GroupRecall) { p.GroupID = " " }, "GroupId"},
		{"no seqs", func(p *GroupRecall) { p.Seqs = nil }, "0 given"},
		{"eleven seqs", func(p *GroupRecall) { p.Seqs = []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11} }, "11 given"},
		{"zero seq", func(p *GroupRecall) { p.Seqs = []int64{0} }, "MsgSeq 0"},
		{"negative seq", func(p *GroupRecall) { p.Seqs = []int64{-4} }, "MsgSeq -4"},
		{"duplicate seq", func(p *GroupRecall) { p.Seqs = []int64{7, 7} }, "given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := ok
			p.Seqs = append([]int64(nil), ok.Seqs...)
			tc.mutate(&p)
			err := p.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestValidMsgKey(t *testing.T) {
	for _, k := range []string{"31906_833502_1572869830", "1_0_0"} {
		if err := ValidMsgKey(k); err != nil {
			t.Errorf("ValidMsgKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range []string{"", "abc", "1_2", "1_2_3_4", "1_x_3", "-1_2_3", strings.Repeat("1", 51) + "_1_1"} {
		if err := ValidMsgKey(k); err == nil {
			t.Errorf("ValidMsgKey(%q) = nil, want an error", k)
		}
	}
}

func TestTaskRoundTrip(t *testing.T) {
	g := GroupRecall{JobID: "j1", AppID: 1400000001, GroupID: "@TGS#1", TopicID: "@TGS#1@TOPIC#a", Seqs: []int64{5, 6}}
	task, err := NewGroupRecallTask(g, QueueIncident, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeGroupRecall(task)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(g) {
		t.Fatalf("round trip: got %+v, want %+v", got, g)
	}

	c := C2CWithdraw{JobID: "j1", AppID: 1400000001, From: "alice", To: "bob", MsgKey: "1_2_3"}
	task, err = NewC2CWithdrawTask(c, QueueBackfill, 0)
	if err != nil {
		t.Fatal(err)
	}
	gotC, err := DecodeC2CWithdraw(task)
	if err != nil {
		t.Fatal(err)
	}
	if gotC != c {
		t.Fatalf("round trip: got %+v, want %+v", gotC, c)
	}
}

func TestNewTaskRejects(t *testing.T) {
	if _, err := NewGroupRecallTask(GroupRecall{JobID: "j", AppID: 1, GroupID: "g"}, QueuePurge, 0); err == nil {
		t.Error("a task with no seqs was built")
	}
	if _, err := NewC2CWithdrawTask(C2CWithdraw{JobID: "j", AppID: 1, From: "a", To: "b", MsgKey: "1_1_1"}, "urgent", 0); err == nil ||
		!strings.Contains(err.Error(), `"urgent"`) {
		t.Errorf("unknown queue: err = %v, want one naming the queue", err)
	}
}

func TestDecodeMalformedSkipsRetry(t *testing.T) {
	cases := []*asynq.Task{
		asynq.NewTask(TypeGroupRecall, []byte(`{"job_id":`)),
		asynq.NewTask(TypeGroupRecall, []byte(`{"job_id":"j","sdkappid":1,"GroupId":"g","seqs":[]}`)),
		asynq.NewTask(TypeC2CWithdraw, []byte(`{"job_id":"j"}`)),
	}
	for _, task := range cases {
		var err error
		if task.Type() == TypeGroupRecall {
			_, err = DecodeGroupRecall(task)
		} else {
			_, err = DecodeC2CWithdraw(task)
		}
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("decode %s %s: err = %v, want one wrapping SkipRetry", task.Type(), task.Payload(), err)
		}
	}
}

func TestTaskIDsDeterministic(t *testing.T) {
	mr := miniredis.RunT(t)
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: mr.Addr()})
	t.Cleanup(func() { _ = client.Close() })

	p := GroupRecall{JobID: "j1", AppID: 1, GroupID: "g", Seqs: []int64{1, 2}}
	enqueue := func(gen int) error {
		task, err := NewGroupRecallTask(p, QueuePurge, gen)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.EnqueueContext(t.Context(), task)
		return err
	}
	if err := enqueue(0); err != nil {
		t.Fatalf("first enqueue: %v", err)
	}
	if err := enqueue(0); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("same chunk enqueued twice: err = %v, want ErrTaskIDConflict", err)
	}
	if err := enqueue(1); err != nil {
		t.Errorf("generation 1 of the same chunk: err = %v, want nil", err)
	}
}

func ExampleNewGroupRecallTask() {
	task, err := NewGroupRecallTask(GroupRecall{
		JobID: "20261122T230000Z-1a2b3c", AppID: 1400000001,
		GroupID: "@TGS#2J4SZEAEL", Seqs: []int64{100, 101},
	}, QueueIncident, 0)
	if err != nil {
		panic(err)
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))
	// Output:
	// recall:group
	// {"job_id":"20261122T230000Z-1a2b3c","sdkappid":1400000001,"GroupId":"@TGS#2J4SZEAEL","seqs":[100,101]}
}
