package producer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/redis/go-redis/v9"
)

// removedMeanwhile is a go-redis hook that, just before the first HDEL is
// sent, lets another remover take the schedule (as a second console tab or
// operator would between Remove's check and its delete).
type removedMeanwhile struct{ other func() }

func (removedMeanwhile) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *removedMeanwhile) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "hdel" && h.other != nil {
			other := h.other
			h.other = nil
			other()
		}
		return next(ctx, cmd)
	}
}
func (removedMeanwhile) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestScheduleRemoveRaceIsOnRecord: when another removal takes the schedule
// between Remove's check and its delete, the loser is told no such schedule
// and the audit trail says its removal was refused, instead of holding two
// removals of one schedule, one of them by someone who removed nothing.
func TestScheduleRemoveRaceIsOnRecord(t *testing.T) {
	mr, rdb := redistest.Mini(t)
	ctx := t.Context()
	scs := NewSchedules(rdb, "")
	req := &JobRequest{Kind: KindPurgeUser, User: "u", Reason: "retention"}
	if err := scs.Add(ctx, Schedule{Name: "nightly", Cron: "0 3 * * *", Request: req, CreatedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	hook := &removedMeanwhile{}
	hook.other = func() {
		if err := NewSchedules(redis.NewClient(&redis.Options{Addr: mr.Addr()}), "").Remove(ctx, "nightly", "alice", "first"); err != nil {
			t.Errorf("the other removal: %v", err)
		}
	}
	rdb.AddHook(hook)
	if err := scs.Remove(ctx, "nightly", "bob", "second"); !errors.Is(err, ErrNoSchedule) {
		t.Fatalf("Remove after another removed it = %v, want ErrNoSchedule", err)
	}
	evs, err := jobs.NewStore(rdb, "").AuditLog(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range evs {
		trail = append(trail, e.Action+" by "+e.Actor)
	}
	want := []string{"schedule_add by ops", "schedule_remove by bob", "schedule_remove by alice", "schedule_remove_refused by bob"}
	if !slices.Equal(trail, want) {
		t.Fatalf("audit trail %q, want %q", trail, want)
	}
}

// TestScheduleViewOfARefusedScheduleHasNoNext: a schedule the scheduler
// refuses (a legacy command line, an interval it will not fire, a request
// this version refuses) is shown with no next due time, as the CLI's
// "never" says, not with times at which nothing will fire.
func TestScheduleViewOfARefusedScheduleHasNoNext(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 30, 0, 0, time.UTC)
	req := &JobRequest{Kind: KindPurgeUser, User: "u", Reason: "retention"}
	for _, sc := range []Schedule{
		{Name: "legacy", Cron: "@daily", Args: []string{"purge", "user", "--user", "u1"}, CreatedBy: "old"},
		{Name: "negative", Cron: "@every -1h", Request: req, CreatedBy: "old"},
		{Name: "half-second", Cron: "@every 500ms", Request: req, CreatedBy: "old"},
		{Name: "foreign-field", Cron: "@daily", Request: &JobRequest{Kind: KindPurgeGroup, Groups: []string{"g"}, User: "u", Reason: "old"}, CreatedBy: "old"},
	} {
		if next := sc.View(now).Next; len(next) != 0 {
			t.Errorf("%s: next %v, want none: the scheduler refuses it", sc.Name, next)
		}
	}
	ok := Schedule{Name: "nightly", Cron: "@daily", Request: req, CreatedBy: "ops"}
	if next := ok.View(now).Next; len(next) != NextDueShown || !next[0].Equal(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("nightly: next %v, want three from 2026-12-04 00:00 UTC", next)
	}
}

// TestScheduleValidateBoundsWhoAndWhy: adding a schedule writes its
// creator and reason to the audit trail, so they are bounded as every
// other audited action's are (CheckWhoAndWhy), even when the request
// gives its own reason; nothing is added or recorded.
func TestScheduleValidateBoundsWhoAndWhy(t *testing.T) {
	_, rdb := redistest.Mini(t)
	scs := NewSchedules(rdb, "")
	req := &JobRequest{Kind: KindPurgeUser, User: "u", Reason: "retention"}
	for _, c := range []struct {
		field string
		sc    Schedule
	}{
		{"actor", Schedule{Name: "a", Cron: "@daily", Request: req, CreatedBy: strings.Repeat("x", MaxActorLen+1)}},
		{"reason", Schedule{Name: "b", Cron: "@daily", Request: req, CreatedBy: "ops", Reason: strings.Repeat("x", MaxReasonLen+1)}},
	} {
		var fe *FieldError
		if err := scs.Add(t.Context(), c.sc); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("Add of %s: %v, want a *FieldError for %s", c.sc.Name, err, c.field)
		}
	}
	if list, err := scs.List(t.Context()); err != nil || len(list) != 0 {
		t.Errorf("%d schedules (%v), want none", len(list), err)
	}
	if evs, err := jobs.NewStore(rdb, "").AuditLog(t.Context(), 10); err != nil || len(evs) != 0 {
		t.Errorf("%d audit events (%v), want none", len(evs), err)
	}
}

// TestScheduleBoundsPinnedWhereAdded: a schedule's since or until given as
// a date without a zone was stored as given and read, at each firing, in
// the zone of the scheduler that fired it: a scheduler in another zone than
// the operator's purged another day's messages. Add stores such a bound as
// RFC 3339 in the adder's zone; ages and RFC 3339 stay as they are.
func TestScheduleBoundsPinnedWhereAdded(t *testing.T) {
	shanghai, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Skipf("no time zone database: %v", err)
	}
	for in, want := range map[string]string{
		"2026-11-01":                "2026-11-01T00:00:00+08:00",
		"2026-11-01 14:30":          "2026-11-01T14:30:00+08:00",
		" 2026-11-01T14:30 ":        "2026-11-01T14:30:00+08:00",
		"2026-11-01T14:30:00-05:00": "2026-11-01T14:30:00-05:00",
		"90d":                       "90d",
		"":                          "",
		"yesterday":                 "yesterday",
	} {
		if got := PinZone(in, shanghai); got != want {
			t.Errorf("PinZone(%q, Asia/Shanghai) = %q, want %q", in, got, want)
		}
	}

	_, rdb := redistest.Mini(t)
	scs := NewSchedules(rdb, "")
	req := &JobRequest{Kind: KindPurgeUser, User: "u", Reason: "retention", Since: "2026-11-01", Until: "30d"}
	if err := scs.Add(t.Context(), Schedule{Name: "nightly", Cron: "0 3 * * *", Request: req, CreatedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	if req.Since != "2026-11-01" {
		t.Fatalf("Add changed its caller's request: since %q", req.Since)
	}
	list, err := scs.List(t.Context())
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	day, _ := time.ParseInLocation("2006-01-02", "2026-11-01", time.Local)
	if got := list[0].Request; got.Since != day.Format(time.RFC3339) || got.Until != "30d" {
		t.Fatalf("stored since %q, until %q; want %q (the adder's midnight) and 30d", got.Since, got.Until, day.Format(time.RFC3339))
	}

	// A legacy schedule (a command line) migrated to a typed request is
	// pinned the same way.
	if err := scs.put(t.Context(), Schedule{Name: "legacy", Cron: "0 4 * * *", Args: []string{"purge", "user", "--user", "u", "--since", "2026-11-01"}, CreatedBy: "ops"}); err != nil {
		t.Fatal(err)
	}
	migrated, err := scs.Migrate(t.Context(), func([]string) (JobRequest, error) {
		return JobRequest{Kind: KindPurgeUser, User: "u", Since: "2026-11-01", Reason: "retention"}, nil
	})
	if err != nil || !slices.Equal(migrated, []string{"legacy"}) {
		t.Fatalf("Migrate = %v, %v", migrated, err)
	}
	if list, err = scs.List(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, sc := range list {
		if sc.Name == "legacy" && (sc.Request == nil || sc.Request.Since != day.Format(time.RFC3339)) {
			t.Fatalf("migrated schedule %+v: want since %q", sc, day.Format(time.RFC3339))
		}
	}
}
