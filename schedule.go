package imrecall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
)

// FireSchedule plans a schedule's firing (a tasks.TypeScheduleRun task) in
// the worker's process, with the worker's own settings: the request says
// what the job is, the worker how to connect. The job records
// "schedule:NAME" as who asked. A bad request is never retried.
func (c *Client) FireSchedule(ctx context.Context, t *asynq.Task, log *slog.Logger) error {
	p, err := tasks.DecodeScheduleRun(t)
	if err != nil {
		return err
	}
	if len(p.Request) == 0 {
		log.Error("schedule refused: its firing holds a command line, not a job request", "schedule", p.Name)
		return fmt.Errorf("schedule %s: a command line, not a job request (schedules from before typed requests never run; the scheduler migrates them): %w", p.Name, asynq.SkipRetry)
	}
	var jr producer.JobRequest
	if err := json.Unmarshal(p.Request, &jr); err != nil {
		return fmt.Errorf("schedule %s: request: %v: %w", p.Name, err, asynq.SkipRetry)
	}
	// A firing creates one job: its task runs again when the worker that
	// ran it stopped or was killed after the job was created (asynq
	// retries it, or queues it again at shutdown), and a second job would
	// recall the same messages alongside the first.
	scs := producer.NewSchedules(c.cfg.Redis, c.cfg.Prefix)
	made, err := scs.JobOf(ctx, p.Name, p.Due)
	if err != nil {
		return fmt.Errorf("schedule %s: %w", p.Name, err)
	}
	if made != "" {
		log.Warn("schedule's firing already created its job: not planned again", "schedule", p.Name, "job_id", made, "due", p.Due)
		return nil
	}
	req, err := RequestOf(jr)
	var created Created
	if err == nil {
		who := "schedule:" + p.Name
		if a := strings.TrimSpace(jr.Actor); a != "" {
			who = a + " (" + who + ")"
		}
		// The job is recorded before any of it is planned: the
		// schedule's next firing waits for it, and this firing's
		// task, run again, does not make another.
		record := func(ctx context.Context, j jobs.Job) error { return scs.RecordJob(ctx, p.Name, p.Due, j.ID) }
		created, err = c.Create(ctx, req, CreateOptions{Actor: who, Reason: jr.Reason, Queue: jr.Queue, Confirmed: true,
			ApprovalAbove: p.ApprovalAbove, Requester: p.Requester, onJob: record})
	}
	var cancelled *CancelledError
	if errors.As(err, &cancelled) {
		// A person stopped this firing's job: firing it again (asynq
		// retries a failed task) would undo the cancel with a new job.
		log.Warn("schedule's job cancelled while it was being planned: this firing ends here", "schedule", p.Name, "job_id", cancelled.JobID, "due", p.Due)
		return nil
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		// Retrying a bad request cannot help.
		log.Error("schedule's request refused", "schedule", p.Name, "err", err)
		return fmt.Errorf("schedule %s: %v: %w", p.Name, err, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("schedule %s: %w", p.Name, err)
	}
	log.Info("schedule fired", "schedule", p.Name, "job_id", created.Job.ID, "due", p.Due, "planned", created.Planned)
	return nil
}
