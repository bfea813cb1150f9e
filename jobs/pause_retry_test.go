package jobs

import (
	"context"
	"errors"
	"testing"
)

// TestTripAnswerLostIsRetriedSafely trips a job's pause (a worker's
// breaker) over a connection to a real redis-server that loses the pause
// script's first answer after Redis ran it: go-redis sends the script
// again. The retry must answer as the first run did: the job was paused by
// this call. Before the fix the retry found the job paused already and
// answered 0: Trip reported that it had not paused the job, so the
// worker's "pause" audit event was never written (and the worker did not
// log why the job stopped).
func TestTripAnswerLostIsRetriedSafely(t *testing.T) {
	ctx := t.Context()
	s, armed, j := lossyJob(t, pauseScript)
	paused, err := retried(t, armed, func() (bool, error) { return s.Trip(ctx, j.ID, "wrong SecretKey") })
	if err != nil || !paused {
		t.Fatalf("Trip, its answer lost and retried = %v, %v; want paused", paused, err)
	}
	if n := auditCount(t, s, j.ID, "pause"); n != 1 {
		t.Fatalf("%d pause audit events, want 1", n)
	}
	got, err := s.Get(ctx, j.ID)
	if err != nil || !got.Paused || got.PauseReason != "wrong SecretKey" {
		t.Fatalf("job after the trip = %+v, %v; want paused for the reason given", got, err)
	}
	// Another call (the next task) finds the job paused already.
	if paused, err := s.Trip(ctx, j.ID, "wrong SecretKey"); err != nil || paused {
		t.Fatalf("a second Trip = %v, %v; want not paused by it", paused, err)
	}
}

// TestPauseResumeAnswerLostIsRetriedSafely pauses or resumes a job over a
// connection that loses the pause script's first answer after Redis ran
// it, while another call (a person's resume, a worker's breaker trip)
// lands before go-redis sends the script again. The retry must change
// nothing: the job ends as the later call left it. Before the fix the
// retry ran the pause or resume a second time and undid the other call: a
// job resumed by a person stayed paused, or a job a worker's breaker had
// just paused ran on (its reason cleared) against an app whose
// configuration was still wrong.
func TestPauseResumeAnswerLostIsRetriedSafely(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pausedAt   bool // the job is paused before the call
		pause      bool // the call: pause (true) or resume
		rival      func(ctx context.Context, s *Store, jobID string) error
		wantPaused bool
		wantReason string
	}{
		{name: "pause, then a resume", pause: true, rival: func(ctx context.Context, s *Store, id string) error {
			return s.SetPaused(ctx, id, "bob", "done checking", false)
		}},
		{name: "resume, then a trip", pausedAt: true, rival: func(ctx context.Context, s *Store, id string) error {
			_, err := s.Trip(ctx, id, "wrong SecretKey")
			return err
		}, wantPaused: true, wantReason: "wrong SecretKey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			var jobID string
			rivalErr := errors.New("the rival did not run")
			s, armed := lossyStoreThen(t, pauseScript, func(other *Store) { rivalErr = tc.rival(ctx, other, jobID) })
			jobID = newJob(t, s).ID
			if tc.pausedAt {
				if err := s.SetPaused(ctx, jobID, "alice", "checking", true); err != nil {
					t.Fatal(err)
				}
			}
			_, err := retried(t, armed, func() (bool, error) { return true, s.SetPaused(ctx, jobID, "alice", "test", tc.pause) })
			if err != nil || rivalErr != nil {
				t.Fatalf("SetPaused, its answer lost and retried: %v (the other call: %v)", err, rivalErr)
			}
			got, err := s.Get(ctx, jobID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Paused != tc.wantPaused || got.PauseReason != tc.wantReason {
				t.Fatalf("job paused %v (reason %q), want %v (%q): the retry undid the call made after it", got.Paused, got.PauseReason, tc.wantPaused, tc.wantReason)
			}
		})
	}
}
