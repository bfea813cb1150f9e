package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrBusy is what a *BusyError matches with errors.Is.
var ErrBusy = errors.New("busy")

// BusyError refuses a re-queue of a job while another one runs: two at
// once would each take the other's moved messages for an interrupted
// re-queue's and queue them again.
type BusyError struct {
	JobID  string
	Action string        // what was asked, e.g. "re-queueing dead letters"
	Holder string        // who runs the re-queue in progress
	Lapse  time.Duration // at most how long until a holder that was killed frees the job
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s: job %s: a re-queue by %s is running; try again when it has finished (if it was killed, the job is free within %v)",
		e.Action, e.JobID, e.Holder, e.Lapse.Round(time.Second))
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

func (s *Store) requeueLockKey(id string) string { return s.jobKey(id) + ":requeue-lock" }

// keepLockScript renews a lock (PEXPIRE) or deletes it (ARGV[2] "0") if it
// is still held by ARGV[1]. KEYS: the lock.
var keepLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

// ErrRequeueLockLost ends a re-queue whose lock was lost: its renewals
// failed for a lease time, or the key was gone or held by another (a
// failover to a replica that never got it, a process stalled past the
// lease). Another re-queue may be running: this one stops rather than
// queue what that one moved.
var ErrRequeueLockLost = errors.New("the job's re-queue lock was lost (not renewed for a lease time, or taken by another): stopped so as not to queue messages twice; run the re-queue again")

// RequeueLock is a job's re-queue lock, renewed in the background every
// third of the store's lease time until released; a holder that dies
// frees the job a lease time later. Release it on every path.
type RequeueLock struct {
	store *Store
	key   string
	value string
	stop  context.CancelFunc
	done  chan struct{}
	lost  chan struct{} // closed when the lock is lost
	once  sync.Once
}

// LockRequeue takes the re-queue lock of job jobID for holder (named in
// the *BusyError of whoever asks while it is held).
func (s *Store) LockRequeue(ctx context.Context, jobID, holder string) (*RequeueLock, error) {
	holder = strings.ReplaceAll(holder, sep, " ")
	if holder == "" {
		holder = "someone"
	}
	l := &RequeueLock{store: s, key: s.requeueLockKey(jobID), value: callToken() + sep + holder}
	for {
		ok, err := s.rdb.SetNX(ctx, l.key, l.value, s.leaseTTL).Result()
		if err != nil {
			return nil, fmt.Errorf("taking the re-queue lock of job %s: %w", jobID, err)
		}
		if ok {
			break
		}
		held, err := s.rdb.Get(ctx, l.key).Result()
		if errors.Is(err, redis.Nil) {
			continue // released in between: take it
		}
		if err != nil {
			return nil, fmt.Errorf("reading the re-queue lock of job %s: %w", jobID, err)
		}
		if held == l.value {
			break // ours: go-redis sent the SET again after its answer was lost
		}
		_, by, _ := strings.Cut(held, sep)
		lapse := s.leaseTTL // the holder's own lease time, if Redis tells it
		if ttl, err := s.rdb.PTTL(ctx, l.key).Result(); err == nil && ttl > 0 {
			lapse = ttl
		}
		return nil, &BusyError{JobID: jobID, Action: "re-queueing dead letters", Holder: by, Lapse: lapse}
	}
	hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	l.stop, l.done, l.lost = stop, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(l.done)
		tick := time.NewTicker(max(s.leaseTTL/3, 10*time.Millisecond))
		defer tick.Stop()
		renewed := time.Now()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tick.C:
			}
			n, err := keepLockScript.Run(hctx, s.rdb, []string{l.key}, l.value, s.leaseTTL.Milliseconds()).Int()
			switch {
			case err == nil && n == 1:
				renewed = time.Now()
			case err == nil, time.Since(renewed) >= s.leaseTTL: // gone or another's; or lapsed by now
				l.once.Do(func() { close(l.lost) })
				return
			} // a missed beat is made up by the next
		}
	}()
	return l, nil
}

// Bind returns ctx, cancelled with ErrRequeueLockLost (context.Cause) once
// the lock is lost; call cancel when done.
func (l *RequeueLock) Bind(ctx context.Context) (context.Context, context.CancelFunc) {
	bctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-l.lost:
			cancel(ErrRequeueLockLost)
		case <-bctx.Done():
		}
	}()
	return bctx, func() { cancel(nil) }
}

// Check returns ErrRequeueLockLost unless the lock is still this holder's
// in Redis: a re-queue checks it before each batch it moves.
func (l *RequeueLock) Check(ctx context.Context) error {
	select {
	case <-l.lost:
		return ErrRequeueLockLost
	default:
	}
	v, err := l.store.rdb.Get(ctx, l.key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("reading the re-queue lock: %w", err)
	}
	if v != l.value {
		l.once.Do(func() { close(l.lost) })
		return ErrRequeueLockLost
	}
	return nil
}

// Release stops renewing the lock and frees the job, even if ctx has
// ended (a stopped re-queue frees it at once).
func (l *RequeueLock) Release(ctx context.Context) error {
	l.stop()
	<-l.done
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := keepLockScript.Run(rctx, l.store.rdb, []string{l.key}, l.value, "0").Err(); err != nil {
		return fmt.Errorf("releasing the re-queue lock: %w", err)
	}
	return nil
}
