package imrecall_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tim"
)

// TestPurgeRecordsATopicIMRefused: a Community topic whose get_topic entry
// carries an ErrorCode (10007, no permission) was dropped: the dry run
// warned of nothing and the job's recorded coverage (what its report and
// certificate list) had no gap. Now both name the topic, and the job plans
// the messages of the Community's other topic.
func TestPurgeRecordsATopicIMRefused(t *testing.T) {
	t.Parallel()
	c, env := newClient(t, 0)
	ctx := t.Context()
	env.IM.Accounts(t, "spammer")
	group := env.IM.Group(t, "Community", "@TGS#refused", "spammer")
	var topics []string
	for _, name := range []string{"refused", "read"} {
		resp, err := env.Client.CreateTopic(ctx, tim.CreateTopicRequest{GroupID: group, TopicName: name})
		if err != nil {
			t.Fatal(err)
		}
		topics = append(topics, resp.TopicID)
		env.IM.SendGroup(t, group, resp.TopicID, 3, "spammer")
	}
	env.IM.Emu.SetFaults(emulator.Faults{TopicCodes: map[string]int{topics[0]: 10007}})
	req := imrecall.GroupPurge{Groups: []string{group}, Senders: []string{"spammer"}}
	plan, err := c.Plan(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Messages != 3 || !slices.ContainsFunc(plan.Warnings, func(w string) bool { return strings.Contains(w, topics[0]) }) {
		t.Fatalf("plan: %d messages, warnings %q; want the read topic's 3 and a warning naming %s", plan.Messages, plan.Warnings, topics[0])
	}
	created, err := c.Create(ctx, req, imrecall.CreateOptions{Actor: "dpo", Reason: "test", Confirmed: true})
	if err != nil {
		t.Fatal(err)
	}
	cov, err := env.Store.Coverage(ctx, created.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var gap *jobs.Gap
	for i, g := range cov.Gaps {
		if g.Kind == jobs.GapTopics {
			gap = &cov.Gaps[i]
		}
	}
	if gap == nil || !slices.Equal(gap.Groups, []string{group}) || !slices.Equal(gap.Topics, topics[:1]) || cov.Complete() {
		t.Fatalf("recorded gaps %+v; want a topics gap naming %s and its topic %s", cov.Gaps, group, topics[0])
	}
}
