package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/imrecall/imrecall/internal/redistest"
)

// TestRequeueLock: one holder at a time, the refusal names the holder; a
// released lock is free at once; a holder that dies (its renewals stop)
// frees the job a lease time later, and one that lives keeps it past that.
func TestRequeueLock(t *testing.T) {
	srv := redistest.Start(t)
	ctx := t.Context()
	store := NewStore(srv.Client(), "")
	store.SetLeaseTTL(300 * time.Millisecond)

	alice, err := store.LockRequeue(ctx, "j1", "alice")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // three lease times: alice's renewals keep it
	_, err = store.LockRequeue(ctx, "j1", "bob")
	var be *BusyError
	if !errors.As(err, &be) || !errors.Is(err, ErrBusy) || be.Holder != "alice" || be.JobID != "j1" || !strings.Contains(err.Error(), "a re-queue by alice is running") {
		t.Fatalf("bob while alice holds it: %v", err)
	}
	if other, err := store.LockRequeue(ctx, "j2", "bob"); err != nil {
		t.Fatalf("another job: %v", err)
	} else {
		_ = other.Release(ctx)
	}
	if err := alice.Release(ctx); err != nil {
		t.Fatal(err)
	}
	bob, err := store.LockRequeue(ctx, "j1", "bob")
	if err != nil {
		t.Fatalf("after alice released it: %v", err)
	}
	_ = bob.Release(ctx)

	// A holder whose process dies: its own client, closed (no renewal, no
	// release).
	dying := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	ds := NewStore(dying, "")
	ds.SetLeaseTTL(300 * time.Millisecond)
	if _, err := ds.LockRequeue(ctx, "j1", "carol"); err != nil {
		t.Fatal(err)
	}
	_ = dying.Close()
	if _, err := store.LockRequeue(ctx, "j1", "dave"); !errors.Is(err, ErrBusy) {
		t.Fatalf("right after carol died: %v, want busy", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := store.LockRequeue(ctx, "j1", "dave")
		if err == nil {
			_ = l.Release(ctx)
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("carol's lock did not lapse: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
