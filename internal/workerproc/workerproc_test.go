package workerproc

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/worker"
)

// TestValidate: each bad setting is an *InputError naming its flag, and a
// zero Discoveries gets the worker's default.
func TestValidate(t *testing.T) {
	t.Parallel()
	good := Settings{Concurrency: 8, MaxAttempts: 5, ScanBudget: time.Minute, PlannerLease: time.Minute}
	s := good
	if err := s.Validate(); err != nil || s.Discoveries != worker.DefaultDiscoveries(8) {
		t.Fatalf("Validate = %v, Discoveries %d", err, s.Discoveries)
	}
	for flag, mod := range map[string]func(*Settings){
		"--concurrency":            func(s *Settings) { s.Concurrency = 0 },
		"--discovery-concurrency":  func(s *Settings) { s.Discoveries = -1 },
		"--reconcile-interval":     func(s *Settings) { s.Reconcile = -time.Second },
		"--planner-lease":          func(s *Settings) { s.PlannerLease = 0 },
		"--max-attempts":           func(s *Settings) { s.MaxAttempts = 0 },
		"--discovery-budget":       func(s *Settings) { s.ScanBudget = 0 },
		"--discovery-budget-pages": func(s *Settings) { s.ScanPages = -1 },
		"--dequeuers":              func(s *Settings) { s.Dequeuers = -1 },
	} {
		s := good
		mod(&s)
		var ie *InputError
		if err := s.Validate(); !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), flag+" (") {
			t.Errorf("%s: Validate = %v, want an InputError naming it", flag, err)
		}
	}
}
