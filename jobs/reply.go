package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// replyLua is the reply protocol of every job script that can refuse: a
// script answers {kind} or {kind, value}, kind 0 with its result, any other
// kind naming why it refused, with the job's status or the requester as the
// value. Go turns the kind into a typed error (see runScript), so no error
// text is ever parsed.
const replyLua = `
local function reply(v) return {0, v} end
local function nojob() return {1} end
local function refused(status) return {2, status} end
local function closed(status) return {3, status} end
local function selfapproval(requester) return {4, requester} end
`

// Reply kinds of replyLua.
const (
	replyOK           = 0 // the value is the script's result
	replyNoJob        = 1 // ErrNotFound
	replyRefused      = 2 // *StatusError, with the job's status
	replyClosed       = 3 // ErrClosed, with the job's status
	replySelfApproval = 4 // *SelfApprovalError, with the requester
)

// SelfApprovalError is returned by Approve when the approver is the
// principal that requested the job: a job held for approval needs a second
// person.
type SelfApprovalError struct {
	JobID     string
	Requester string
}

func (e *SelfApprovalError) Error() string {
	return fmt.Sprintf("approving job %s: %s requested it and cannot approve it too: another admin must", e.JobID, e.Requester)
}

// runScript runs a script that answers by replyLua and returns its result,
// or the typed error its reply kind names; what says what was asked, for the
// error.
func (s *Store) runScript(ctx context.Context, sc *redis.Script, jobID, what string, keys []string, args ...any) (any, error) {
	res, err := sc.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("%s: job %s: %w", what, jobID, err)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("%s: job %s: the script gave an empty reply", what, jobID)
	}
	kind, ok := res[0].(int64)
	if !ok {
		return nil, fmt.Errorf("%s: job %s: the script's reply kind is %T, not an integer", what, jobID, res[0])
	}
	var v any
	if len(res) > 1 {
		v = res[1]
	}
	detail, _ := v.(string)
	switch kind {
	case replyOK:
		return v, nil
	case replyNoJob:
		return nil, fmt.Errorf("%s: job %s: %w", what, jobID, ErrNotFound)
	case replyRefused:
		return nil, &StatusError{JobID: jobID, Status: Status(detail), Action: what}
	case replyClosed:
		return nil, fmt.Errorf("%s: job %s is %s: %w", what, jobID, detail, ErrClosed)
	case replySelfApproval:
		return nil, &SelfApprovalError{JobID: jobID, Requester: detail}
	}
	return nil, fmt.Errorf("%s: job %s: unknown reply kind %d", what, jobID, kind)
}

// replyString is a script result that is a string (or nothing: "").
func replyString(v any, err error) (string, error) {
	if err != nil {
		return "", err
	}
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	}
	return "", fmt.Errorf("script result is %T, not a string", v)
}

// replyInt is a script result that is an integer.
func replyInt(v any, err error) (int64, error) {
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("script result is %T, not an integer", v)
	}
	return n, nil
}

// replyStrings is a script result that is a list of strings.
func replyStrings(v any, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("script result is %T, not a list", v)
	}
	out := make([]string, len(list))
	for i, e := range list {
		str, ok := e.(string)
		if !ok {
			return nil, errors.New("script result: a list entry is not a string")
		}
		out[i] = str
	}
	return out, nil
}

// replyList is a script result that is a list.
func replyList(v any, err error) ([]any, error) {
	if err != nil {
		return nil, err
	}
	list, ok := v.([]any)
	if !ok && v != nil {
		return nil, fmt.Errorf("script result is %T, not a list", v)
	}
	return list, nil
}

// callToken is a random token naming one call (of a script, of a lock), so
// that a script run again by go-redis, its first answer lost, knows its own
// work from a rival's.
func callToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// callAnswerTTL is how long a script keeps a call's answer under its call
// key (callKey). It must outlast every retry go-redis may send of the call:
// with its default options a command is given up within about a minute
// (four tries, each waiting at most 4 s for a pooled connection, 5 s to
// dial, 3 s to write and 3 s to read, with backoffs between them), and the
// workers bound Park by a 10 s context. The scripts that keep answers are
// rare calls (a park: a paused job's tasks, once each; a pause, resume or
// breaker trip; a gone planner's interruption), so these keys are few.
const callAnswerTTL = 2 * time.Minute

// callKey is the key where one call of a job's script, named by its token
// (callToken), keeps its answer for callAnswerTTL: a run that finds it is
// that same call sent again by go-redis (its first answer lost), and
// answers what the first run answered, changing nothing. It carries the
// job's hash tag, and the scripts take it in KEYS (Redis Cluster).
func (s *Store) callKey(jobID, token string) string {
	return s.jobKey(jobID) + ":call:" + token
}

// callAnswerLua is the Lua, after replyLua, of a script that keeps its
// answer under its call's key (callKey): kept(key) is the answer an earlier
// run of the same call kept (false if none: this is the first run), and
// keep(key, ttl, v) keeps v for ttl ms (callAnswerMillis) and returns
// reply(v).
const callAnswerLua = `
local function kept(key) return redis.call('GET', key) end
local function keep(key, ttl, v)
  redis.call('SET', key, v, 'PX', ttl)
  return reply(v)
end
`

// callAnswerMillis is callAnswerTTL in milliseconds, as the scripts take it
// (SET … PX).
var callAnswerMillis = strconv.FormatInt(callAnswerTTL.Milliseconds(), 10)
