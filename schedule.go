package imrecall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"
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
	req, err := RequestOf(jr)
	var created Created
	if err == nil {
		who := "schedule:" + p.Name
		if a := strings.TrimSpace(jr.Actor); a != "" {
			who = a + " (" + who + ")"
		}
		created, err = c.Create(ctx, req, CreateOptions{Actor: who, Reason: jr.Reason, Queue: jr.Queue, Confirmed: true,
			ApprovalAbove: p.ApprovalAbove, Requester: p.Requester})
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
	// The schedule's next firing waits for this job to finish. Not
	// recorded, it would not wait; the firing is not run again for that
	// (a retry would create a second job).
	if err := producer.NewSchedules(c.cfg.Redis, c.cfg.Prefix).RecordJob(ctx, p.Name, p.Due, created.Job.ID); err != nil {
		log.Error("schedule's job not recorded: its next firing will not wait for it", "schedule", p.Name, "job_id", created.Job.ID, "err", err)
	}
	return nil
}
