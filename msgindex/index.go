// Package msgindex keeps a per-sender index of sent messages, fed by Tencent
// IM's after-send callbacks (Group.CallbackAfterSendMsg and
// C2C.CallbackAfterSendMsg), so that a user's messages can be recalled later
// without scanning every history: Tencent's own advice for recall is to record
// GroupId/MsgSeq and MsgKey as messages are sent.
//
// The index lives in Redis. Per app and sender there are two sorted sets
// scored by MsgTime: group messages (GroupId, TopicId, MsgSeq) and one-to-one
// messages (peer, MsgKey). Entries older than the retention (set it to the
// app's roaming period: older messages cannot be recalled anyway) are trimmed
// as new ones arrive, and a sender's keys expire a retention after their last
// message. Per app the index records since when it has been fed: it covers a
// time range only if it was fed since before the range begins.
//
// Tencent's callback Sign covers only the token and RequestTime, not the
// body, so what a callback says is a claim: entries land unconfirmed, and a
// Confirmer (run by serve) checks them against the history in batches,
// moving those it backs into the index proper and dropping those it
// contradicts. Lookups return both, unconfirmed ones marked, and a purge by
// index confirms senders itself before recalling (producer.SenderCheck).
// A confirmer pass that is interrupted (the process killed) holds its
// senders for a lease; then another pass takes them.
//
// Callbacks are delivered at most once (Tencent documents no retry), so an
// outage of the receiver leaves holes. Every replica of the receiver keeps a
// heartbeat (Index.Alive): a silence longer than two beats of all of them or
// of one replica (killed, or cut off from Redis), or a receiver started while
// none ran, is recorded as a gap, and so is a callback that could not be
// indexed (RecordGap; a replica that could not record it then carries it in
// its next beat). A range with a gap in
// it, or older than the retention, is not covered: purge it by history scan.
package msgindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/redis/go-redis/v9"
)

// sep separates the parts of an entry; it cannot appear in an IM identifier
// (Entry.Validate refuses control characters).
const sep = "\x1f"

// pageSize is how many entries a lookup reads from Redis at a time.
const pageSize = 1000

// Index is the Redis-backed message index. It is safe for concurrent use.
type Index struct {
	rdb    redis.UniversalClient
	prefix string
	// Retention is how long entries are kept; zero keeps them forever.
	retention time.Duration
	now       func() time.Time
}

// New returns an index on rdb under prefix (empty: jobs.DefaultPrefix) that
// keeps entries for retention (zero: forever).
func New(rdb redis.UniversalClient, prefix string, retention time.Duration) *Index {
	if prefix == "" {
		prefix = jobs.DefaultPrefix
	}
	return &Index{rdb: rdb, prefix: prefix, retention: retention, now: time.Now}
}

// Retention is how long entries are kept; zero is forever.
func (x *Index) Retention() time.Duration { return x.retention }

// The keys of one sender share a hash tag, so they live on one Cluster slot.
func (x *Index) userKey(app int64, user, kind string) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + ":" + user + "}:" + kind
}

func (x *Index) metaKey(app int64) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + "}:meta"
}

func (x *Index) seenKey(app int64, digest string) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + "}:seen:" + digest
}

// Entry is one sent message as the index records it: a group message
// (GroupID, TopicID, MsgSeq) or a one-to-one message (To, MsgKey), sent by
// From at Time.
type Entry struct {
	From    string
	Time    time.Time
	GroupID string
	TopicID string
	MsgSeq  int64
	To      string
	MsgKey  string
	// Unconfirmed marks an entry the confirmer has not yet checked against
	// the history: what a callback claimed, which a purge must confirm
	// itself (producer.SenderCheck) before recalling.
	Unconfirmed bool
}

// IsGroup reports whether e is a group message.
func (e Entry) IsGroup() bool { return e.GroupID != "" }

// Validate names the first bad field.
func (e Entry) Validate() error {
	if err := validID("From_Account", e.From, true); err != nil {
		return err
	}
	if e.Time.Unix() <= 0 {
		return fmt.Errorf("MsgTime %d: want a positive unix time", e.Time.Unix())
	}
	if e.IsGroup() {
		if err := validID("GroupId", e.GroupID, true); err != nil {
			return err
		}
		if err := validID("TopicId", e.TopicID, false); err != nil {
			return err
		}
		if e.MsgSeq <= 0 {
			return fmt.Errorf("MsgSeq %d: want a positive number", e.MsgSeq)
		}
		return nil
	}
	if err := validID("To_Account", e.To, true); err != nil {
		return err
	}
	if err := tasks.ValidMsgKey(e.MsgKey); err != nil {
		return err
	}
	return nil
}

func validID(field, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s: required", field)
		}
		return nil
	}
	if len(s) > 256 {
		return fmt.Errorf("%s: longer than 256 bytes", field)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q: control characters are not allowed", field, s)
		}
	}
	return nil
}

func (e Entry) member() string {
	if e.IsGroup() {
		return e.GroupID + sep + e.TopicID + sep + strconv.FormatInt(e.MsgSeq, 10)
	}
	return e.To + sep + e.MsgKey
}

// Add records entries of app as unconfirmed: Tencent's Sign does not cover
// a callback's body, so an entry is what a callback claimed until the
// Confirmer has checked it against the history. Adding an entry twice is
// harmless: the first time claimed for a message stands. The first entry
// ever added starts the app's coverage.
func (x *Index) Add(ctx context.Context, app int64, entries ...Entry) error {
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("indexing a message: %w", err)
		}
	}
	now := x.now()
	pipe := x.rdb.Pipeline()
	touched := map[string]bool{}
	users := map[string]bool{}
	for _, e := range entries {
		key := x.userKey(app, e.From, pendingKind(e))
		// The first claim of a message keeps its time: a body replayed on a
		// signed URL with another MsgTime must not move (or trim) the entry
		// of a real callback. The confirmer puts the history's time on it.
		pipe.ZAddNX(ctx, key, redis.Z{Score: float64(e.Time.Unix()), Member: e.member()})
		touched[key] = true
		users[e.From] = true
	}
	x.trim(ctx, pipe, touched, now)
	// After the entries: the sender is due for the confirmer now, even if
	// a pass holds it (that pass then leaves it due; see claimScript).
	for u := range users {
		pipe.ZAdd(ctx, x.pendingKey(app), redis.Z{Score: float64(now.UnixMilli()), Member: u})
	}
	meta := x.metaKey(app)
	pipe.HSetNX(ctx, meta, "since", now.Unix())
	pipe.HSet(ctx, meta, "last", now.Unix())
	pipe.HIncrBy(ctx, meta, "entries", int64(len(entries)))
	pipe.HSet(ctx, meta, "retention", int64(x.retention/time.Second))
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("indexing %d messages: %w", len(entries), err)
	}
	return nil
}

// trim drops entries older than the retention from keys and sets their expiry.
func (x *Index) trim(ctx context.Context, pipe redis.Pipeliner, keys map[string]bool, now time.Time) {
	if x.retention <= 0 {
		return
	}
	for key := range keys {
		pipe.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(now.Add(-x.retention).Unix(), 10))
		pipe.Expire(ctx, key, x.retention)
	}
}

// The kinds of a sender's sorted sets: confirmed group and one-to-one
// entries, and those still unconfirmed.
const (
	kindGroup       = "g"
	kindC2C         = "c"
	kindGroupUnconf = "ug"
	kindC2CUnconf   = "uc"
)

func pendingKind(e Entry) string {
	if e.IsGroup() {
		return kindGroupUnconf
	}
	return kindC2CUnconf
}

func confirmedKind(e Entry) string {
	if e.IsGroup() {
		return kindGroup
	}
	return kindC2C
}

// pendingKey is the sorted set of senders with unconfirmed entries, scored
// by when the confirmer should take them (unix ms).
func (x *Index) pendingKey(app int64) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + "}:unconfirmed"
}

// Coverage says since when the index of an app has been fed.
type Coverage struct {
	// Since is when the index began (or last restarted) recording; zero if
	// it never recorded anything.
	Since time.Time `json:"since"`
	// Last is when it last recorded a message.
	Last time.Time `json:"last"`
	// Entries counts the messages recorded since it began (duplicates
	// included, trimmed ones not subtracted).
	Entries int64 `json:"entries"`
	// Retention is how long entries are kept (zero: forever).
	Retention time.Duration `json:"-"`
	// RetentionSeconds is Retention for JSON.
	RetentionSeconds int64 `json:"retention_seconds"`
	// Gaps are the recorded times since Since in which callbacks may have
	// been lost, oldest first; the last one reaches now while no receiver
	// beats (every serve stopped, or one silent past its deadline).
	Gaps []Gap `json:"gaps,omitempty"`
	// Confirmation counts what the confirmer decided since the index began.
	Confirmation Confirmation `json:"confirmation"`
}

// Confirmation counts the confirmer's decisions on callback entries.
type Confirmation struct {
	// Confirmed entries were moved into the index proper: the history shows
	// the claimed sender's message there.
	Confirmed int64 `json:"confirmed"`
	// Forged entries were dropped: the history shows another sender (or
	// another message) where the callback claimed one.
	Forged int64 `json:"forged"`
	// Gone entries were dropped: the history shows the claimed sender's
	// message already recalled or deleted, so there is nothing to recall.
	Gone int64 `json:"gone"`
	// Missing entries were dropped: the history did not show them within
	// the confirmer's grace period (expired, or never sent).
	Missing int64 `json:"missing"`
	// Pending counts the senders with entries not yet confirmed.
	PendingSenders int64 `json:"pending_senders"`
}

// Coverage returns the app's coverage.
func (x *Index) Coverage(ctx context.Context, app int64) (Coverage, error) {
	h, err := x.rdb.HGetAll(ctx, x.metaKey(app)).Result()
	if err != nil {
		return Coverage{}, fmt.Errorf("reading the index coverage of app %d: %w", app, err)
	}
	c := Coverage{Retention: x.retention}
	unix := func(s string) time.Time {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return time.Time{}
		}
		return time.Unix(n, 0)
	}
	c.Since, c.Last = unix(h["since"]), unix(h["last"])
	c.Entries, _ = strconv.ParseInt(h["entries"], 10, 64)
	c.Confirmation.Confirmed, _ = strconv.ParseInt(h["confirmed"], 10, 64)
	c.Confirmation.Forged, _ = strconv.ParseInt(h["forged"], 10, 64)
	c.Confirmation.Gone, _ = strconv.ParseInt(h["gone"], 10, 64)
	c.Confirmation.Missing, _ = strconv.ParseInt(h["missing"], 10, 64)
	if c.Confirmation.PendingSenders, err = x.rdb.ZCard(ctx, x.pendingKey(app)).Result(); err != nil {
		return Coverage{}, fmt.Errorf("reading the index coverage of app %d: %w", app, err)
	}
	// The writer's retention (serve's --index-retention) is what applies.
	if sec, err := strconv.ParseInt(h["retention"], 10, 64); err == nil {
		c.Retention = time.Duration(sec) * time.Second
	}
	c.RetentionSeconds = int64(c.Retention / time.Second)
	// Gaps that end before the oldest entry kept no longer matter.
	lo := "-inf"
	if c.Retention > 0 {
		lo = strconv.FormatInt(x.now().Add(-c.Retention).Unix(), 10)
	}
	gaps, err := x.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: x.gapsKey(app), Start: lo, Stop: "+inf", ByScore: true}).Result()
	if err != nil {
		return Coverage{}, fmt.Errorf("reading the index gaps of app %d: %w", app, err)
	}
	for _, raw := range gaps {
		var g Gap
		if err := json.Unmarshal([]byte(raw), &g); err == nil && !g.To.Before(c.Since) {
			c.Gaps = append(c.Gaps, g)
		}
	}
	open, err := x.openGap(ctx, app, h["alive"])
	if err != nil {
		return Coverage{}, err
	}
	if open != nil && !open.To.Before(c.Since) {
		c.Gaps = append(c.Gaps, *open)
	}
	return c, nil
}

// openGap is the gap no beat has recorded yet because no receiver beats:
// every replica of the receiver has left (serve stopped), or one has not
// beaten by its deadline (killed, or cut off from Redis) and no other has
// beaten since to record it. Callbacks sent meanwhile are being lost, so a
// range that reaches now is not covered. alive is the app's last beat.
func (x *Index) openGap(ctx context.Context, app int64, alive string) (*Gap, error) {
	last, _ := strconv.ParseInt(alive, 10, 64)
	if last <= 0 {
		return nil, nil // no receiver ever beat (an index fed otherwise)
	}
	rs, err := x.rdb.HGetAll(ctx, x.receiversKey(app)).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the callback receivers of app %d: %w", app, err)
	}
	t, err := x.rdb.Time(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("reading the callback receivers of app %d: %w", app, err)
	}
	now := t.Unix()
	var g *Gap
	if len(rs) == 0 {
		g = &Gap{From: time.Unix(last, 0), Reason: "no callback receiver is running: callbacks sent since are lost"}
	}
	for _, v := range rs {
		var beat, deadline int64
		if _, err := fmt.Sscanf(v, "%d %d", &beat, &deadline); err != nil || now <= deadline {
			continue
		}
		if g == nil || time.Unix(beat, 0).Before(g.From) {
			g = &Gap{From: time.Unix(beat, 0), Reason: "a callback receiver replica has stopped beating (killed, or cut off from Redis): callbacks sent to it since are lost"}
		}
	}
	if g == nil {
		return nil, nil
	}
	// Open: it reaches now, by Redis's clock and ours.
	g.From, g.To = g.From.UTC(), time.Unix(max(now, x.now().Unix()), 0).UTC()
	return g, nil
}

// Covers reports whether the index holds every message sent from since on
// (zero since: over the whole retention, which must then be set): it has
// been fed since before then, its retention reaches back that far, and no
// recorded gap (an outage of the receiver, a callback that could not be
// indexed) falls after it.
func (c Coverage) Covers(since, now time.Time) bool {
	return c.Why(since, now) == ""
}

// Why says why the index does not cover [since, now], or "" when it does.
func (c Coverage) Why(since, now time.Time) string {
	if c.Since.IsZero() {
		return "the index has recorded nothing"
	}
	if since.IsZero() {
		if c.Retention <= 0 {
			return "no start was given and the index keeps entries forever, so it cannot say what it covers"
		}
		since = now.Add(-c.Retention)
	}
	if c.Retention > 0 && since.Before(now.Add(-c.Retention).Add(-time.Second)) {
		return fmt.Sprintf("the index keeps entries for %s: messages before %s are no longer in it", c.Retention, now.Add(-c.Retention).UTC().Format(time.RFC3339))
	}
	if c.Since.After(since) {
		return fmt.Sprintf("the index begins %s, after the range starts", c.Since.UTC().Format(time.RFC3339))
	}
	for _, g := range c.Gaps {
		if g.To.After(since) {
			return fmt.Sprintf("the index has a gap from %s to %s (%s)", g.From.UTC().Format(time.RFC3339), g.To.UTC().Format(time.RFC3339), g.Reason)
		}
	}
	return ""
}

// Gap is a time in which callbacks may have been lost: the receiver was
// down, or a callback could not be indexed.
type Gap struct {
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	Reason string    `json:"reason"`
}

// maxGaps bounds the gaps kept per app (the newest are kept).
const maxGaps = 1000

func (x *Index) gapsKey(app int64) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + "}:gaps"
}

// RecordGap records that callbacks of app may have been lost in [from, to]:
// from then on the index does not claim to cover a range that includes it.
func (x *Index) RecordGap(ctx context.Context, app int64, from, to time.Time, reason string) error {
	b, err := json.Marshal(Gap{From: from.UTC(), To: to.UTC(), Reason: reason})
	if err != nil {
		return err
	}
	key := x.gapsKey(app)
	pipe := x.rdb.Pipeline()
	pipe.ZAdd(ctx, key, redis.Z{Score: float64(to.Unix()), Member: string(b)})
	pipe.ZRemRangeByRank(ctx, key, 0, -maxGaps-1)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("recording an index gap of app %d: %w", app, err)
	}
	return nil
}

// AwaitBeats waits until every replica of the receiver has beaten since
// this call began (Redis time), or passed its deadline (then Coverage
// holds its silence), so that a gap a replica held in memory then (a
// callback it could not index, carried by its next beat) or the silence of
// one killed is in the coverage read after. It waits at most two beats of
// the slowest replica, or until ctx ends.
func (x *Index) AwaitBeats(ctx context.Context, app int64) error {
	t, err := x.rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("reading Redis's clock: %w", err)
	}
	start := t.Unix()
	for {
		rs, err := x.rdb.HGetAll(ctx, x.receiversKey(app)).Result()
		if err != nil {
			return fmt.Errorf("reading the callback receivers of app %d: %w", app, err)
		}
		t, err := x.rdb.Time(ctx).Result()
		if err != nil {
			return fmt.Errorf("reading Redis's clock: %w", err)
		}
		waiting := false
		for _, v := range rs {
			var last, deadline int64
			if _, err := fmt.Sscanf(v, "%d %d", &last, &deadline); err == nil && last <= start && t.Unix() <= deadline {
				waiting = true
			}
		}
		if !waiting {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// receiversKey is the hash of the callback receiver replicas that beat:
// field the replica, value "LAST DEADLINE LIFE": its last beat and the time
// by which it must beat again (Redis time, unix seconds), and which run of
// it beat.
func (x *Index) receiversKey(app int64) string {
	return x.prefix + ":idx:{" + strconv.FormatInt(app, 10) + "}:receivers"
}

// The reasons of the gaps the heartbeat records.
const (
	reasonNotRunning = "the callback receiver was not running (or could not reach Redis)"
	reasonStopped    = "a callback receiver replica stopped beating (killed, or cut off from Redis): the callbacks sent to it may have been lost"
	reasonRolledBack = "Redis lost writes (a failover to a replica behind, or a restart from an older snapshot): entries indexed since may be gone"
)

// Alive is one heartbeat of the callback receiver replica, called every
// interval while it runs. replica names the receiver where it runs (the
// same after a restart in the same place: serve uses its host and listen
// address) and life this run of it (unique to the process). In the same
// step it records lost, the gap of callbacks the replica could not index
// and could not record then (nil: none), so that a replica whose beat went
// in has left nothing in memory. Every replica beats on its own record,
// and a beat records as a gap, and returns:
//   - a silence of every replica longer than two beats (they were down,
//     or could not reach Redis);
//   - the silence of a replica that has not beaten for two of its beats
//     (killed, or cut off from Redis: the callbacks it refused meanwhile,
//     and whose gap it held, are in it), from its last beat, and at once
//     that of a replica started again in the same place without having
//     left (killed);
//   - the start of a replica while no other runs, from the last beat of
//     any: a receiver restarted within two beats was down all the same.
//
// Heartbeats are stamped by Redis's clock, the one clock every replica of
// the receiver shares: a replica whose own clock is off by more than two
// beats neither hides a silence (a clock ahead, read by one behind) nor
// makes one up.
func (x *Index) Alive(ctx context.Context, app int64, replica, life string, interval time.Duration, lost *Gap) (*Gap, error) {
	g, _, err := x.beat(ctx, app, replica, life, 0, interval, lost)
	return g, err
}

// beat is Alive for a run of a replica that remembers the stamp of its last
// beat (prev, unix seconds; 0: none yet): a record that holds an older one
// has lost writes (Redis failed over to a replica behind, or restarted from
// an older snapshot), and so may the index since, which is a gap. It
// returns this beat's stamp.
func (x *Index) beat(ctx context.Context, app int64, replica, life string, prev int64, interval time.Duration, lost *Gap) (*Gap, int64, error) {
	member, score, err := gapMember(lost)
	if err != nil {
		return nil, 0, err
	}
	window := int64((2*interval + time.Second - 1) / time.Second)
	res, err := heartbeatScript.Run(ctx, x.rdb, []string{x.metaKey(app), x.receiversKey(app), x.gapsKey(app)},
		replica, window, member, score, maxGaps, reasonNotRunning, reasonStopped, life, prev, reasonRolledBack).Slice()
	if err != nil {
		return nil, 0, fmt.Errorf("the index heartbeat of app %d: %w", app, err)
	}
	if len(res) != 3 {
		return nil, 0, fmt.Errorf("the index heartbeat of app %d: the script answered %v", app, res)
	}
	from, _ := res[0].(int64)
	now, _ := res[1].(int64)
	reason, _ := res[2].(string)
	if reason == "" {
		return nil, now, nil
	}
	return &Gap{From: time.Unix(from, 0).UTC(), To: time.Unix(now, 0).UTC(), Reason: reason}, now, nil
}

// Leave takes replica (its run life, as it beat) out of the receivers once
// it no longer receives callbacks (serve stopped), recording lost with it
// (nil: none). A
// receiver that starts next while no other runs records the time between
// as a gap; one that never leaves is found silent two beats after its last.
func (x *Index) Leave(ctx context.Context, app int64, replica, life string, lost *Gap) error {
	member, score, err := gapMember(lost)
	if err != nil {
		return err
	}
	if err := leaveScript.Run(ctx, x.rdb, []string{x.metaKey(app), x.receiversKey(app), x.gapsKey(app)},
		replica, member, score, maxGaps, life).Err(); err != nil {
		return fmt.Errorf("taking the callback receiver out of the index of app %d: %w", app, err)
	}
	return nil
}

// gapMember is g as the gaps' sorted set holds it ("" for nil), and its score.
func gapMember(g *Gap) (string, int64, error) {
	if g == nil {
		return "", 0, nil
	}
	b, err := json.Marshal(Gap{From: g.From.UTC(), To: g.To.UTC(), Reason: g.Reason})
	if err != nil {
		return "", 0, err
	}
	return string(b), g.To.Unix(), nil
}

// luaGap is the Lua of the heartbeat scripts that records a gap the way
// RecordGap does: gap(from, to, reason) adds the JSON of a Gap to KEYS[3].
const luaGap = `
local function iso(t)
  local days = math.floor(t / 86400)
  local secs = t - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', y, m, d, math.floor(secs / 3600), math.floor(secs % 3600 / 60), secs % 60)
end
local function gap(from, to, reason)
  redis.call('ZADD', KEYS[3], to, cjson.encode({from = iso(from), to = iso(to), reason = reason}))
end
`

// heartbeatScript is Alive: KEYS[1] the app's index meta hash, KEYS[2] its
// receivers, KEYS[3] its gaps; ARGV the replica, two beats in seconds, the
// replica's lost gap ("" for none) and its score, the gaps kept, and the
// two reasons, the run of the replica, the stamp of its last beat (0:
// none) and the reason of a record that lost writes. It returns the start of the gap it found (0: none), Redis's
// now, and the gap's reason ("": none).
var heartbeatScript = redis.NewScript(luaGap + `
local now = tonumber(redis.call('TIME')[1])
local me, window = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) end
local prev = tonumber(redis.call('HGET', KEYS[1], 'alive') or '0') or 0
local from, reason = nil, ''
local known, others = false, false
local expected = tonumber(ARGV[9]) or 0
local rs = redis.call('HGETALL', KEYS[2])
for i = 1, #rs, 2 do
  local last, deadline, life = string.match(rs[i + 1], '^(%d+) (%d+) ?(.*)$')
  last, deadline = tonumber(last) or 0, tonumber(deadline) or 0
  if now > deadline or (rs[i] == me and life ~= ARGV[8]) then
    redis.call('HDEL', KEYS[2], rs[i])
    if from == nil or last < from then from = last end
    reason = ARGV[7]
  elseif rs[i] == me then
    known = true
    if expected > 0 and last < expected then
      if from == nil or last < from then from = last end
      reason = ARGV[10]
    end
  else
    others = true
  end
end
if prev > 0 and (now - prev > window or (not known and not others)) then
  if from == nil or prev < from then from = prev end
  reason = ARGV[6]
end
if expected > 0 and not known and reason == '' then
  -- this run beat before, and its record is gone: found silent by
  -- another (that gap is recorded too), or Redis lost it
  from, reason = expected, ARGV[7]
end
redis.call('HSET', KEYS[2], me, now .. ' ' .. (now + window) .. ' ' .. ARGV[8])
redis.call('HSET', KEYS[1], 'alive', now)
if from ~= nil then gap(from, now, reason) end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
return {from or 0, now, reason}
`)

// leaveScript is Leave: the keys of heartbeatScript; ARGV the replica, its
// lost gap ("" for none) and its score, the gaps kept, its run.
var leaveScript = redis.NewScript(`
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2]) end
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if mine and string.match(mine, ' ([^ ]*)$') == ARGV[5] then redis.call('HDEL', KEYS[2], ARGV[1]) end
local now = tonumber(redis.call('TIME')[1])
local prev = tonumber(redis.call('HGET', KEYS[1], 'alive') or '0') or 0
if now > prev then redis.call('HSET', KEYS[1], 'alive', now) end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[4]) - 1)
return 1
`)

// RestartCoverage declares that the index holds every message only from at
// on: use it after the callback receiver was down, since Tencent does not
// retry callbacks and the messages sent meanwhile are missing.
func (x *Index) RestartCoverage(ctx context.Context, app int64, at time.Time) error {
	if err := x.rdb.HSet(ctx, x.metaKey(app), "since", at.Unix()).Err(); err != nil {
		return fmt.Errorf("restarting the index coverage of app %d: %w", app, err)
	}
	return nil
}

// Lookup calls fn for every indexed message app's user sent in
// [since, until] (zero: open): first the entries still unconfirmed
// (Entry.Unconfirmed set: a purge confirms them itself), then the confirmed
// ones, group messages before one-to-one, each kind in time order. The
// confirmer moves an entry in one transaction, and unconfirmed entries are read
// first, so an entry confirmed while a lookup runs is never missed (it may be
// handed twice; producer.SenderCheck takes duplicates). It reads Redis a page
// at a time, so memory stays flat.
func (x *Index) Lookup(ctx context.Context, app int64, user string, since, until time.Time, fn func(Entry) error) error {
	if err := validID("user", user, true); err != nil {
		return err
	}
	lo, hi := "-inf", "+inf"
	if !since.IsZero() {
		lo = strconv.FormatInt(since.Unix(), 10)
	}
	if !until.IsZero() {
		hi = strconv.FormatInt(until.Unix(), 10)
	}
	for _, kind := range []string{kindGroupUnconf, kindC2CUnconf, kindGroup, kindC2C} {
		if err := x.lookupKind(ctx, app, user, kind, lo, hi, fn); err != nil {
			return err
		}
	}
	return nil
}

// lookupKind pages one sorted set by key, never by offset: new callbacks
// trim old entries while a lookup runs, and an offset would then skip as
// many entries as were trimmed. Each page starts after the last score read;
// the entries that share that score (one second of one sender) are read
// whole, in Redis's member order, before moving on.
func (x *Index) lookupKind(ctx context.Context, app int64, user, kind, lo, hi string, fn func(Entry) error) error {
	key := x.userKey(app, user, kind)
	emit := func(zs []redis.Z) error {
		for _, z := range zs {
			e, err := parseMember(kind, z.Member.(string))
			if err != nil {
				return fmt.Errorf("reading the index of %s: %w", user, err)
			}
			e.From, e.Time = user, time.Unix(int64(z.Score), 0)
			e.Unconfirmed = kind == kindGroupUnconf || kind == kindC2CUnconf
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	for {
		page, err := x.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: key, Start: lo, Stop: hi, ByScore: true, Count: pageSize,
		}).Result()
		if err != nil {
			return fmt.Errorf("reading the index of %s: %w", user, err)
		}
		if len(page) < pageSize {
			return emit(page)
		}
		// Hold back the last score's entries and read them whole.
		last := page[len(page)-1].Score
		cut := len(page)
		for cut > 0 && page[cut-1].Score == last {
			cut--
		}
		if err := emit(page[:cut]); err != nil {
			return err
		}
		score := strconv.FormatInt(int64(last), 10)
		ties, err := x.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: score, Stop: score, ByScore: true}).Result()
		if err != nil {
			return fmt.Errorf("reading the index of %s: %w", user, err)
		}
		if err := emit(ties); err != nil {
			return err
		}
		lo = "(" + score
	}
}

func parseMember(kind, m string) (Entry, error) {
	parts := strings.Split(m, sep)
	switch {
	case (kind == kindGroup || kind == kindGroupUnconf) && len(parts) == 3:
		seq, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil || seq <= 0 {
			return Entry{}, fmt.Errorf("bad group entry %q", m)
		}
		return Entry{GroupID: parts[0], TopicID: parts[1], MsgSeq: seq}, nil
	case (kind == kindC2C || kind == kindC2CUnconf) && len(parts) == 2:
		return Entry{To: parts[0], MsgKey: parts[1]}, nil
	}
	return Entry{}, errors.New("bad entry " + strconv.Quote(m))
}

// Sink receives what a lookup finds, in the shape of a job's plan (a
// producer.Batcher or Tally has these methods).
type Sink interface {
	AddGroup(ctx context.Context, t jobs.Target, seqs ...int64) error
	AddC2C(ctx context.Context, t jobs.Target, msgKey string) error
}

// Counts is what a lookup handed to a sink.
type Counts struct {
	GroupMessages int `json:"group_messages"`
	C2CMessages   int `json:"c2c_messages"`
	Groups        int `json:"groups"`
	Peers         int `json:"peers"`
	// Unconfirmed counts the entries the confirmer had not checked yet.
	Unconfirmed int `json:"unconfirmed"`
}

// Plan hands every indexed message of user in [since, until] to sink,
// confirmed and unconfirmed alike: a purge by index puts a
// producer.SenderCheck in front of its plan, which confirms them all from
// the history again, so an entry still waiting for the confirmer is neither
// missed nor trusted.
func (x *Index) Plan(ctx context.Context, app int64, user string, since, until time.Time, sink Sink) (Counts, error) {
	var c Counts
	groups, peers := map[jobs.Target]bool{}, map[string]bool{}
	err := x.Lookup(ctx, app, user, since, until, func(e Entry) error {
		if e.Unconfirmed {
			c.Unconfirmed++
		}
		if e.IsGroup() {
			t := jobs.Target{GroupID: e.GroupID, TopicID: e.TopicID}
			groups[t] = true
			c.GroupMessages++
			return sink.AddGroup(ctx, t, e.MsgSeq)
		}
		peers[e.To] = true
		c.C2CMessages++
		return sink.AddC2C(ctx, jobs.Target{From: user, To: e.To}, e.MsgKey)
	})
	c.Groups, c.Peers = len(groups), len(peers)
	return c, err
}
