package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// gatedEnqueuer holds the first enqueue until released.
type gatedEnqueuer struct {
	q       producer.Enqueuer
	reached chan struct{}
	release chan struct{}
	first   bool
}

func (g *gatedEnqueuer) EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	if !g.first {
		g.first = true
		close(g.reached)
		<-g.release
	}
	return g.q.EnqueueContext(ctx, t, opts...)
}

// TestCreateJobOutlivesTheClient: a client that drops POST /v1/jobs while
// the job is being planned (between planning its first call and queueing it)
// does not interrupt planning: the job is planned and queued in full.
func TestCreateJobOutlivesTheClient(t *testing.T) {
	gate := &gatedEnqueuer{reached: make(chan struct{}), release: make(chan struct{})}
	b := setupClient(t, func(c *imrecall.Config) { gate.q = c.Queue; c.Queue = gate }, nil)
	var msgs []MessageRef
	for s := int64(1); s <= 95; s++ {
		msgs = append(msgs, MessageRef{GroupID: "@TGS#1", MsgSeq: s})
	}
	raw, _ := json.Marshal(CreateJobRequest{Kind: KindRecall, Reason: "INC-2", Messages: msgs, Confirm: true})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "POST", b.url+"/v1/jobs", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	req.Header.Set("Content-Type", "application/json")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-gate.reached:
	case err := <-done:
		t.Fatalf("the request ended before planning queued anything: %v", err)
	}
	cancel() // the client goes away mid-plan
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want cancelled", err)
	}
	time.Sleep(50 * time.Millisecond) // let the server see the connection close (the plan must not care)
	close(gate.release)

	var j jobs.Job
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := b.store.List(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 && list[0].Status != jobs.StatusPlanning {
			j = list[0]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job is still planning: %+v", list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j.Status != jobs.StatusRunning || j.Counts.Planned != 95 || j.PlanningInterrupted != nil {
		t.Fatalf("job = %s planned %d interrupted %+v; want running, 95 planned, not interrupted", j.Status, j.Counts.Planned, j.PlanningInterrupted)
	}
	qi, err := b.inspector.GetQueueInfo(tasks.QueueIncident)
	if err != nil || qi.Pending != 10 {
		t.Fatalf("queue: %+v, %v; want the 10 tasks of 95 seqs", qi, err)
	}
}
