package console

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/jobs"
)

// TestRefusalStatus: the Client's typed errors become the console's
// refusals with the API's statuses; a job cancelled while it was planned
// is a conflict, not a failure.
func TestRefusalStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("creating: %w", &imrecall.CancelledError{JobID: "j"}), http.StatusConflict},
		{&imrecall.FieldError{Field: "user", Reason: "required"}, http.StatusBadRequest},
		{&jobs.SelfApprovalError{JobID: "j", Requester: "a"}, http.StatusForbidden},
		{jobs.ErrNotFound, http.StatusNotFound},
	} {
		var e *Error
		if err := refusal(c.err); !errors.As(err, &e) || e.Status != c.want {
			t.Errorf("refusal(%v) = %v, want status %d", c.err, err, c.want)
		}
	}
	if err := refusal(errors.New("redis down")); errors.As(err, new(*Error)) {
		t.Errorf("an untyped error became a refusal: %v", err)
	}
}
