package worker

import (
	"context"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// HandleError is for asynq.Config.ErrorHandler: when a recall task is
// about to be archived (its last attempt failed), its messages that are not
// terminal are dead-lettered with code jobs.CodeExhausted and the last
// error, so that nothing stays pending behind an archived task (asynq
// drops its archive after a while; the dead letters stay with the job and
// `imrecall dlq requeue` can try them again). Other task types and
// failures that asynq retries are left alone.
func (h *Handler) HandleError(ctx context.Context, t *asynq.Task, err error) {
	if !tasks.Archived(ctx, err) {
		return
	}
	var jobID string
	var target jobs.Target
	var items []string
	switch t.Type() {
	case tasks.TypeGroupRecall:
		p, derr := tasks.DecodeGroupRecall(t)
		if derr != nil {
			return // an invalid payload names no message
		}
		jobID, target = p.JobID, jobs.Target{GroupID: p.GroupID, TopicID: p.TopicID}
		for _, s := range p.Seqs {
			items = append(items, seqItem(s))
		}
	case tasks.TypeC2CWithdraw:
		p, derr := tasks.DecodeC2CWithdraw(t)
		if derr != nil {
			return
		}
		jobID, target, items = p.JobID, jobs.Target{From: p.From, To: p.To}, []string{p.MsgKey}
	default:
		return
	}
	retried, _ := asynq.GetRetryCount(ctx)
	out := make([]jobs.Outcome, len(items))
	for i, it := range items {
		out[i] = jobs.Outcome{Item: it, Code: jobs.CodeExhausted, ErrorInfo: "task archived after its last attempt: " + err.Error(), Attempts: retried + 1}
	}
	// The task's context may be done already (a timeout): record anyway.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	log := h.cfg.Logger.With("job_id", jobID, "task_id", taskIDOf(ctx), "target", target.String())
	n, rerr := h.store.Record(rctx, jobID, target, out)
	if rerr != nil {
		log.Error("task archived; its messages could not be dead-lettered", "err", rerr, "cause", err)
		return
	}
	log.Warn("task archived after its last attempt: its pending messages dead-lettered", "messages", n, "code", jobs.CodeExhausted, "cause", err)
	h.cfg.Metrics.message(string(jobs.NeedsAttention), n)
}

func seqItem(s int64) string { return strconv.FormatInt(s, 10) }

func taskIDOf(ctx context.Context) string {
	id, _ := asynq.GetTaskID(ctx)
	return id
}
