package worker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/hibiken/asynq"
)

func TestLimitRunningSnoozesPastTheLimit(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	var ran atomic.Int32
	h := LimitRunning(2, "busy", asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		ran.Add(1)
		started <- struct{}{}
		<-release
		return nil
	}))
	task := asynq.NewTask("t", nil)
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- h.ProcessTask(t.Context(), task) }()
		<-started
	}

	// Two are running: a third is snoozed, and the snooze uses no attempt.
	err := h.ProcessTask(t.Context(), task)
	var s *Snooze
	if !errors.As(err, &s) || s.Reason != "busy" {
		t.Fatalf("third task: err = %v, want a Snooze", err)
	}
	if IsFailure(err) {
		t.Fatal("a snooze must not count as a failure")
	}
	if RetryDelay(0, err, task) != s.After || s.After <= 0 {
		t.Fatalf("retry delay %v, want the snooze's %v", RetryDelay(0, err, task), s.After)
	}
	if ran.Load() != 2 {
		t.Fatalf("handler ran %d times, want 2", ran.Load())
	}

	// One ends: its slot is free again.
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() { done <- h.ProcessTask(t.Context(), task) }()
	<-started
	if ran.Load() != 3 {
		t.Fatalf("handler ran %d times, want 3", ran.Load())
	}
	close(release)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
