package jobs

import "github.com/redis/go-redis/v9"

// settleLua ends a job whose planning is over and whose messages are all
// terminal. It is shared by every script that can complete a job.
// Expects KEYS[1] = job hash, KEYS[planners] = planners set, now = ARGV[1].
const settleLua = `
local function settle(meta, planners, now)
  if redis.call('SCARD', planners) > 0 then return end
  local h = redis.call('HMGET', meta, 'planned', 'recalled', 'dead_lettered', 'status', 'finished_at')
  local planned, recalled, dead = tonumber(h[1] or '0'), tonumber(h[2] or '0'), tonumber(h[3] or '0')
  local status = h[4]
  if status == 'planning' then
    -- Planning is over. A job one of whose discovery targets failed for good,
    -- or one of whose planners was interrupted (see InterruptPlanner), did
    -- not plan everything it was asked to: it ends failed (what was planned
    -- is still recalled); else running.
    status = 'running'
    if tonumber(redis.call('HGET', meta, 'failed_units') or '0') > 0 then status = 'failed' end
    if redis.call('HEXISTS', meta, 'planning_interrupted') == 1 then status = 'failed' end
    redis.call('HSET', meta, 'status', status)
  end
  if recalled + dead < planned then return end
  if status == 'running' then
    redis.call('HSET', meta, 'status', 'done')
  end
  if not h[5] or h[5] == '' then
    redis.call('HSET', meta, 'finished_at', now)
  end
end
`

// planScript marks new messages of one target planned, counts them, and
// journals them under the planner's token until the planner confirms they
// are queued (see Store.PlanJournaled). A message is new if this call planned
// it, or if the journal holds it under this very token: a retry of the same
// call (go-redis retries a script after a read timeout) returns the same
// answer, even once the job has stopped planning (which refuses new
// messages). KEYS: job hash, state hash, targets set, journal hash, then the
// bucket index and the items' buckets (bucketLua, base 5). ARGV: target
// suffix, token ("" = no journal), n, n journal fields to remove (messages
// the planner has queued since its last call), items... Returns the new
// items, or an error if the job cannot take more messages.
var planScript = redis.NewScript(replyLua + bucketLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
local n = tonumber(ARGV[3])
for i = 4, 3 + n do redis.call('HDEL', KEYS[4], ARGV[i]) end
local open = status == 'planning'
local tok = ARGV[2]
local buckets = redis.call('HGET', KEYS[1], 'layout') == '2' -- layoutBuckets
local new, planned, seen = {}, 0, {}
for i = 4 + n, #ARGV do
  local item = ARGV[i]
  if seen[item] then
    -- given twice in one call: new once
  elseif open and plant(5, i - 3 - n, item, buckets) then
    new[#new + 1] = item
    planned = planned + 1
    if tok ~= '' then redis.call('HSET', KEYS[4], ARGV[1] .. '\031' .. item, tok) end
  elseif tok ~= '' and redis.call('HGET', KEYS[4], ARGV[1] .. '\031' .. item) == tok then
    new[#new + 1] = item
  end
  seen[item] = true
end
if not open and #new == 0 and 4 + n <= #ARGV then return closed(status) end
if planned > 0 then
  redis.call('HINCRBY', KEYS[1], 'planned', planned)
  redis.call('SADD', KEYS[3], ARGV[1])
end
return reply(new)
`)

// beginScript is called before every API call for a task's messages: with
// ARGV[1] "0" to peek, and with "1" once the call may go, when, unless the
// job is cancelled or paused, it counts a send for each message not yet
// terminal. KEYS: job hash, state hash, then the bucket index and the items'
// buckets (bucketLua, base 3). ARGV: count flag, items...
// Returns {status, paused, state1, state2, ...} where a state is the number
// of earlier sends (0 = fresh), -1 recalled, -2 dead-lettered, -3 unplanned;
// a state of n + 1000000 means n earlier sends whose answers all arrived.
// A count that sends anything adds one to the job's calls (Job.Calls).
var beginScript = redis.NewScript(replyLua + bucketLua + `
local h = redis.call('HMGET', KEYS[1], 'status', 'paused', 'hold')
if not h[1] then return nojob() end
local paused = h[2] or '0'
if h[3] and h[3] ~= '' then paused = '1' end
local out = {h[1], paused}
local act = ARGV[1] == '1' and h[1] ~= 'cancelled' and paused ~= '1'
local sent = false
for i = 2, #ARGV do
  local k, f, cur = where(3, i - 1, ARGV[i])
  local st
  if not cur then st = -3
  elseif cur == 'r' or cur == 'u' then st = -1
  elseif string.sub(cur, 1, 1) == 'd' then st = -2
  else
    local n = 0
    if cur ~= 'p' then n = tonumber(string.sub(cur, 2)) or 0 end
    st = n
    if string.sub(cur, 1, 1) == 'a' then st = n + 1000000 end
    if act then
      redis.call('HSET', k, f, 's' .. (n + 1))
      sent = true
    end
  end
  out[#out + 1] = st
end
if sent then redis.call('HINCRBY', KEYS[1], 'calls', 1) end
return reply(out)
`)

// answeredScript notes that a send of each message was answered without
// recalling it (a retryable code), so that a later delivery does not
// suspect it, if that send is still the message's last: a later one (of
// another delivery of the same task) stays unanswered. KEYS: job hash,
// state hash, then the bucket index and the items' buckets (bucketLua,
// base 3). ARGV: pairs of item and the number of its answered send.
var answeredScript = redis.NewScript(bucketLua + `
for i = 1, #ARGV, 2 do
  local k, f, cur = where(3, (i + 1) / 2, ARGV[i])
  if cur == 's' .. ARGV[i + 1] then
    redis.call('HSET', k, f, 'a' .. ARGV[i + 1])
  end
end
return 1
`)

// recordScript moves messages to a terminal state; the first terminal state
// wins. KEYS: job hash, state hash, dead-letter hash, planners set, then
// the bucket index and the items' buckets (bucketLua, base 5).
// ARGV: now, then per message: item, outcome ("r", "u" or "d"), code, dead-letter
// field, dead-letter record. Returns how many messages changed state.
var recordScript = redis.NewScript(settleLua + bucketLua + `
local n = 0
for i = 2, #ARGV, 5 do
  local item, outcome, code = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k, f, cur = where(5, (i + 3) / 5, item)
  if cur and cur ~= 'r' and cur ~= 'u' and string.sub(cur, 1, 1) ~= 'd' then
    if outcome == 'r' or outcome == 'u' then
      redis.call('HSET', k, f, outcome)
      redis.call('HINCRBY', KEYS[1], 'recalled', 1)
      if outcome == 'u' then redis.call('HINCRBY', KEYS[1], 'recalled_unattributed', 1) end
    else
      redis.call('HSET', k, f, 'd:' .. code)
      redis.call('HINCRBY', KEYS[1], 'dead_lettered', 1)
      redis.call('HINCRBY', KEYS[1], 'dl:' .. code, 1)
      redis.call('HSET', KEYS[3], ARGV[i + 3], ARGV[i + 4])
    end
    n = n + 1
  end
end
if n > 0 then
  if not redis.call('HGET', KEYS[1], 'started_at') then redis.call('HSET', KEYS[1], 'started_at', ARGV[1]) end
  settle(KEYS[1], KEYS[4], ARGV[1])
end
return n
`)

// closePlannerScript closes one planning unit and settles the job.
// KEYS: job hash, planners set. ARGV: now, unit.
var closePlannerScript = redis.NewScript(replyLua + settleLua + `
if not redis.call('HGET', KEYS[1], 'status') then return nojob() end
redis.call('SREM', KEYS[2], ARGV[2])
settle(KEYS[1], KEYS[2], ARGV[1])
return reply(redis.call('HGET', KEYS[1], 'status'))
`)

// openPlannerScript opens a planning unit of a job still planning.
// KEYS: job hash, planners set. ARGV: unit.
var openPlannerScript = redis.NewScript(replyLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if status ~= 'planning' then return closed(status) end
return reply(redis.call('SADD', KEYS[2], ARGV[1]))
`)

// setStatusScript changes a job's status for cancel and fail (see the state
// table in docs/ACCOUNTING.md): cancel moves planning, running and failed to
// cancelled; fail moves planning and running to failed; any other status is
// left as it is and returned. Either closes every planning unit (discovery
// stops at its next page) and clears a pause (the parked tasks of a
// cancelled job come back and are dead-lettered as cancelled without a call).
// KEYS: job hash, planners set. ARGV: now, new status, error text.
var setStatusScript = redis.NewScript(replyLua + settleLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if status == 'done' or status == 'cancelled' then return reply(status) end
if status == 'failed' and ARGV[2] ~= 'cancelled' then return reply(status) end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
if ARGV[2] == 'cancelled' then
  redis.call('HSET', KEYS[1], 'paused', '0')
  redis.call('HDEL', KEYS[1], 'hold')
end
redis.call('DEL', KEYS[2])
settle(KEYS[1], KEYS[2], ARGV[1])
return reply(ARGV[2])
`)

// requeueScript moves dead-lettered messages back to planned and notes each
// in the re-queue journal until its task is queued (see ConfirmRequeued).
// A message dead-lettered with a code that may hide a call the server
// acted on unheard (UnansweredCodes: timeout, transport, exhausted), or
// whose record says in_doubt (an earlier call went unanswered), moves
// back to "sent, unanswered" (s1) rather than planned, so that its next
// delivery checks it against the history as it does any lost answer: a
// message the lost call recalled is counted recalled (attribution
// unknown), not dead-lettered as not found.
// The job's status follows the state table: a cancelled job is refused (it
// stays cancelled), a job still planning stays planning (its discovery goes
// on), a done job runs again, a failed one stays failed; finished_at is
// cleared. The re-queue journal notes each message under the call's
// token: a run that finds a message moved and journaled under its own
// token (go-redis sends a script again when its answer was lost) answers
// it as moved, so that it is queued. KEYS: job hash, state hash,
// dead-letter hash, re-queue journal, then the bucket index and the items'
// buckets (bucketLua, base 5). ARGV: the call's token, then pairs of item
// and dead-letter field. Returns the items moved.
var requeueScript = redis.NewScript(replyLua + bucketLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if status == 'cancelled' then return refused('cancelled') end
local unanswered = {` + unansweredLua + `}
local tok = ARGV[1]
local moved = {}
for i = 2, #ARGV, 2 do
  local k, f, cur = where(5, i / 2, ARGV[i])
  if cur and string.sub(cur, 1, 2) == 'd:' then
    local code = string.sub(cur, 3)
    local rec = redis.call('HGET', KEYS[3], ARGV[i + 1])
    if unanswered[code] or (rec and cjson.decode(rec).in_doubt == true) then redis.call('HSET', k, f, 's1') else redis.call('HSET', k, f, 'p') end
    redis.call('HINCRBY', KEYS[1], 'dead_lettered', -1)
    if redis.call('HINCRBY', KEYS[1], 'dl:' .. code, -1) <= 0 then redis.call('HDEL', KEYS[1], 'dl:' .. code) end
    redis.call('HDEL', KEYS[3], ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i + 1], tok)
    moved[#moved + 1] = ARGV[i]
  elseif redis.call('HGET', KEYS[4], ARGV[i + 1]) == tok then
    moved[#moved + 1] = ARGV[i] -- moved by this very call: its answer was lost
  end
end
if #moved > 0 then
  if status == 'done' then redis.call('HSET', KEYS[1], 'status', 'running') end
  redis.call('HDEL', KEYS[1], 'finished_at')
end
return reply(moved)
`)

// pauseScript pauses or resumes a job. ARGV[1] is "pause" (a person: refused
// for a cancelled job), "trip" (a worker's breaker: ignored for a cancelled
// or done job, and for a job already paused, whose reason it keeps) or
// "resume" (clears the pause and its reason; parked tasks are then queued
// again by the workers; resumed_at_us notes when by Redis's clock, which
// workers compare with their breaker's trip: see Store.ResumedAt).
// KEYS: job hash, the call's key (callKey). ARGV: mode, reason, now, then
// callAnswerTTL in ms. Returns 1 if the pause flag changed, 0 if not. The
// answer is kept under the call's key: a run that finds it (the same call
// sent again by go-redis, its first answer lost) answers it and changes
// nothing, so that a retried trip still reports the pause it made (and its
// caller audits it), and a retried pause or resume does not undo what
// another call did in between (nor move resumed_at_us).
var pauseScript = redis.NewScript(replyLua + callAnswerLua + `
local prior = kept(KEYS[2])
if prior then return reply(tonumber(prior)) end -- run again: its answer was lost
local function answer(n) return keep(KEYS[2], ARGV[4], n) end
local h = redis.call('HMGET', KEYS[1], 'status', 'paused')
local status, paused = h[1], h[2] == '1'
if not status then return nojob() end
if ARGV[1] == 'resume' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'paused', '0', 'resumed_at', ARGV[3], 'resumed_at_us', string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  redis.call('HDEL', KEYS[1], 'pause_reason')
  if paused then return answer(1) end
  return answer(0)
end
if status == 'cancelled' then
  if ARGV[1] == 'trip' then return answer(0) end
  return refused('cancelled')
end
if ARGV[1] == 'trip' and (status == 'done' or paused) then return answer(0) end
redis.call('HSET', KEYS[1], 'paused', '1', 'paused_at', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'pause_reason', ARGV[2]) else redis.call('HDEL', KEYS[1], 'pause_reason') end
if paused then return answer(0) end
return answer(1)
`)

// parkScript stores a paused job's task aside: the task completes, and is
// queued again when the job is resumed or cancelled. It parks only while the
// job is paused and not cancelled. KEYS: job hash, parked list, the call's
// key (callKey). ARGV: the parked record, stored as "<park number>|<record>",
// then callAnswerTTL in ms. Returns the park number, or 0 if the job is not
// paused. The answer is kept under the call's key: a run that finds it (the
// same call sent again by go-redis, its first answer lost) answers it and
// parks nothing more.
var parkScript = redis.NewScript(replyLua + callAnswerLua + `
local prior = kept(KEYS[3])
if prior then return reply(tonumber(prior)) end -- run again: its answer was lost
local h = redis.call('HMGET', KEYS[1], 'status', 'paused', 'hold')
if not h[1] then return nojob() end
local held = h[3] and h[3] ~= ''
local n = 0
if h[1] ~= 'cancelled' and (h[2] == '1' or held) then
  n = redis.call('HINCRBY', KEYS[1], 'parked_seq', 1)
  redis.call('RPUSH', KEYS[2], n .. '|' .. ARGV[1])
end
return keep(KEYS[3], ARGV[2], n)
`)

// failPlannerScript closes a planning unit that failed for good (a discovery
// target whose history could not be read) and records why: planning goes on
// for the other units, and the job ends failed once planning is over.
// KEYS: job hash, planners set. ARGV: now, unit, error text.
var failPlannerScript = redis.NewScript(replyLua + settleLua + `
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return nojob() end
if redis.call('SREM', KEYS[2], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'failed_units', 1)
  if not redis.call('HGET', KEYS[1], 'error') then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
end
settle(KEYS[1], KEYS[2], ARGV[1])
return reply(redis.call('HGET', KEYS[1], 'status'))
`)
