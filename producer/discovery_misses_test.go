package producer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/imtest"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/tim"
)

// The emulator answers as Tencent documents; each test here is a way
// discovery used to miss messages on it.

// communityWithTopics starts an emulator with a synthetic app and returns
// a Community of it with members and at least minTopics topics.
func communityWithTopics(t *testing.T, minTopics int) (*imtest.Env, emulator.GroupInfo) {
	t.Helper()
	env := imtest.Start(t, emulator.Config{})
	if _, err := env.Emu.Generate(emulator.DatasetSpec{Groups: 12, Users: 60, GroupMessages: 2000, C2CMessages: 10,
		HeavyGroups: 4, Topics: 3, Seed: 11, TypeMix: map[string]int{"Community": 1}}); err != nil {
		t.Fatal(err)
	}
	for _, g := range env.Emu.Groups() {
		if g.Type == TypeCommunity && len(g.Topics) >= minTopics && len(g.Members) > 0 {
			return env, g
		}
	}
	t.Fatalf("the dataset has no Community with %d topics and members", minTopics)
	return nil, emulator.GroupInfo{}
}

// topicsGap is the report's topics gap, or nil.
func topicsGap(rep *Report) *jobs.Gap {
	for _, g := range rep.Gaps {
		if g.Kind == jobs.GapTopics {
			return &g
		}
	}
	return nil
}

// TestPurgeGroupListsCommunityTopics: get_topic requires From_Account. A
// purge of groups (no user to ask as) used to send none, read the error as
// "no topics", and skip every topic's messages.
func TestPurgeGroupListsCommunityTopics(t *testing.T) {
	env, c := communityWithTopics(t, 1)
	community, topics := c.GroupID, len(c.Topics)
	scans, _, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community}})
	if err != nil {
		t.Fatal(err)
	}
	if len(scans) != 1+topics {
		t.Fatalf("%d scans for a Community with %d topics, want %d: %+v", len(scans), topics, 1+topics, scans)
	}
	tally := &Tally{}
	if err := RunScans(t.Context(), env.Client, scans, 4, tally, &Report{}); err != nil {
		t.Fatal(err)
	}
	want := len(env.Emu.GroupMessages(community, ""))
	for _, tp := range env.Emu.Groups() {
		if tp.GroupID == community {
			for _, id := range tp.Topics {
				want += len(env.Emu.GroupMessages(community, id))
			}
		}
	}
	if tally.Count() != want {
		t.Fatalf("found %d messages, the community and its topics hold %d", tally.Count(), want)
	}
}

// TestCommunityTopicsRefusedAreAGap: get_topic refusing for good for a
// reason other than "no topics" (here 10007, no permission) used to read as
// a Community without topics: its topics' messages were skipped and the
// report claimed nothing was missed. Now the group is scanned, its topics
// are named in a topics gap, for a purge of the group and of a member; a
// Community without topics (10004) has no gap, and a transient error fails
// the listing.
func TestCommunityTopicsRefusedAreAGap(t *testing.T) {
	env, community := communityWithTopics(t, 1)
	refuse := func(code int) {
		env.Emu.SetFaults(emulator.Faults{CodesOf: map[string]map[int]float64{"get_topic": {code: 1}}})
	}

	refuse(10007)
	scans, rep, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community.GroupID}})
	if err != nil {
		t.Fatal(err)
	}
	gap := topicsGap(rep)
	if len(scans) != 1 || scans[0].Target != (jobs.Target{GroupID: community.GroupID}) || gap == nil ||
		!slices.Equal(gap.Groups, []string{community.GroupID}) || !strings.Contains(gap.What, "10007") {
		t.Fatalf("get_topic refused (10007): scans %+v, gaps %+v; want the group scanned and its topics named in a topics gap", scans, rep.Gaps)
	}
	member := community.Members[0]
	_, rep, err = UserScans(t.Context(), env.Client, UserPurge{User: member})
	if err != nil {
		t.Fatal(err)
	}
	if gap := topicsGap(rep); gap == nil || !slices.Contains(gap.Groups, community.GroupID) {
		t.Fatalf("a purge of member %s, get_topic refused: gaps %+v; want %s in a topics gap", member, rep.Gaps, community.GroupID)
	}

	refuse(10004)
	scans, rep, err = GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community.GroupID}})
	if err != nil || len(scans) != 1 || topicsGap(rep) != nil {
		t.Fatalf("get_topic answered 10004 (a Community without topics): scans %+v, gaps %+v, %v; want the group, no gap", scans, rep.Gaps, err)
	}

	refuse(10002)
	if _, _, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community.GroupID}}); err == nil {
		t.Fatal("get_topic failing with 10002 (internal error, retry): the listing succeeded; want its error")
	}
}

// TestCommunityTopicRefusedIsAGap: get_topic answers each topic with its
// own ErrorCode. A topic whose entry carried one (here 10007, no
// permission) was dropped silently: its messages were never read and the
// report claimed nothing was missed. Now it is named in a topics gap (the
// Community in Groups, the topic in Topics) while the other topics are
// scanned; a topic that no longer exists (10010) is no gap, there is
// nothing left of it to recall; a transient code (10002) or a frequency
// limit (10006) fails the listing, to be retried.
func TestCommunityTopicRefusedIsAGap(t *testing.T) {
	env, community := communityWithTopics(t, 2)
	refused := community.Topics[0]
	// wantScans: the group and each topic but the one refused.
	wantScans := []jobs.Target{{GroupID: community.GroupID}}
	for _, id := range community.Topics[1:] {
		wantScans = append(wantScans, jobs.Target{GroupID: community.GroupID, TopicID: id})
	}
	targets := func(scans []Scan) []jobs.Target {
		out := make([]jobs.Target, len(scans))
		for i, s := range scans {
			out[i] = s.Target
		}
		return out
	}
	for _, tc := range []struct {
		name string
		code int
		// gap: the topic is named in a topics gap; fails: the listing
		// fails with the code.
		gap, fails bool
	}{
		{name: "no permission", code: 10007, gap: true},
		{name: "invalid parameter", code: 10004, gap: true},
		{name: "topic gone", code: 10010},
		{name: "internal error", code: 10002, fails: true},
		{name: "frequency limit", code: 10006, fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env.Emu.SetFaults(emulator.Faults{TopicCodes: map[string]int{refused: tc.code}})
			t.Cleanup(func() { env.Emu.SetFaults(emulator.Faults{}) })
			scans, rep, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{community.GroupID}})
			if tc.fails {
				var te *tim.Error
				if !errors.As(err, &te) || te.Code != tc.code {
					t.Fatalf("topic %s answered %d: got scans %v, error %v; want the listing to fail with a *tim.Error of code %d",
						refused, tc.code, targets(scans), err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantScans, targets(scans)); diff != "" {
				t.Errorf("topic %s answered %d: scans (-want +got):\n%s", refused, tc.code, diff)
			}
			gap := topicsGap(rep)
			if !tc.gap {
				if gap != nil {
					t.Fatalf("topic %s answered %d (it no longer exists): gap %+v; want none", refused, tc.code, *gap)
				}
				return
			}
			if gap == nil || !slices.Equal(gap.Groups, []string{community.GroupID}) || !slices.Equal(gap.Topics, []string{refused}) ||
				!strings.Contains(gap.What, refused) || !strings.Contains(gap.What, strconv.Itoa(tc.code)) {
				t.Fatalf("topic %s answered %d: gaps %+v; want a topics gap naming %s, the topic and the code", refused, tc.code, rep.Gaps, community.GroupID)
			}
			_, rep, err = UserScans(t.Context(), env.Client, UserPurge{User: community.Members[0]})
			if err != nil {
				t.Fatal(err)
			}
			if gap := topicsGap(rep); gap == nil || !slices.Contains(gap.Topics, refused) {
				t.Fatalf("a purge of member %s, topic %s answered %d: gaps %+v; want the topic in a topics gap", community.Members[0], refused, tc.code, rep.Gaps)
			}
		})
	}
}

// TestScanReadsPastARunOfRecalledMessages: a page of group history is a
// window of 20 seqs; without WithRecalledMsg the recalled ones are left out,
// so 20 recalled in a row came back as an empty page and ended the scan.
func TestScanReadsPastARunOfRecalledMessages(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	gid := env.Group(t, "Public", "g1", "alice", "bob")
	seqs := env.SendGroup(t, gid, "", 100, "alice")
	// Seqs 31..75 recalled before the purge (45 in a row, two whole pages).
	for i := 30; i < 75; i += 10 {
		if _, err := env.Client.RecallGroup(t.Context(), gid, "", seqs[i:min(i+10, 75)]); err != nil {
			t.Fatal(err)
		}
	}
	tally := &Tally{}
	rep, err := PlanGroupPurge(t.Context(), env.Client, GroupPurge{Groups: []string{gid}, Senders: []string{"alice"}}, tally)
	if err != nil {
		t.Fatal(err)
	}
	if tally.Count() != 55 || rep.GroupMsgs != 55 {
		t.Fatalf("found %d (report %d) of alice's 55 messages not yet recalled", tally.Count(), rep.GroupMsgs)
	}
}

// TestPurgeReadsOneToOneFromThePeersSide: a sender who cleared their side
// of a conversation (delete_c2c_msg_ramble) hides those messages from a scan
// as them, but the peer still has them. Discovery reads the peer's side
// too, so a purge finds them, and recalls them.
func TestPurgeReadsOneToOneFromThePeersSide(t *testing.T) {
	srv := redistest.Start(t)
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	keys := env.SendC2C(t, "alice", "bob", 150)
	env.SendC2C(t, "bob", "alice", 20)
	hidden := keys[10:55] // 45 of alice's, cleared from alice's side only
	for i := 0; i < len(hidden); i += 30 {
		if _, err := env.Client.DeleteC2CMsgRamble(t.Context(), tim.DeleteC2CMsgRambleRequest{
			OperatorAccount: "alice", PeerAccount: "bob", MsgKeyList: hidden[i:min(i+30, len(hidden))]}); err != nil {
			t.Fatal(err)
		}
	}
	spec := UserPurge{User: "alice", Peers: []string{"bob"}}

	// In this process (a dry run): every one of alice's 150, once.
	tally := &Tally{}
	rep, err := PlanUserPurge(t.Context(), env.Client, spec, tally)
	if err != nil {
		t.Fatal(err)
	}
	if tally.Count() != 150 || rep.C2CMsgs != 150 {
		t.Fatalf("dry run found %d (report %d) of alice's 150 messages to bob", tally.Count(), rep.C2CMsgs)
	}

	// In workers, a page budget at a time (the side is in the checkpoint).
	store := jobs.NewStore(srv.Client(), "")
	job, err := store.Create(t.Context(), jobs.Spec{Kind: "purge:user", Queue: tasks.QueuePurge, AppID: imtest.AppID, RequestedBy: "t"})
	if err != nil {
		t.Fatal(err)
	}
	scans, _, err := UserScans(t.Context(), env.Client, spec)
	if err != nil {
		t.Fatal(err)
	}
	q := &memQ{}
	if _, err := EnqueueScans(t.Context(), store, q, job, scans); err != nil {
		t.Fatal(err)
	}
	if _, err := store.ClosePlanner(t.Context(), job.ID, jobs.RootPlanner); err != nil {
		t.Fatal(err)
	}
	b := &discoveryBundle{env: env, store: store, q: q, job: job}
	if _, errs := b.drain(t, NewDiscoverHandler(env.Client, store, q, nil).WithBudget(1, 0)); len(errs) > 0 {
		t.Fatal(errs)
	}
	queued := map[string]bool{}
	for _, task := range q.tasks {
		if p, err := tasks.DecodeC2CWithdraw(task); err == nil {
			if queued[p.MsgKey] {
				t.Fatalf("%s queued twice", p.MsgKey)
			}
			queued[p.MsgKey] = true
			if _, err := env.Client.AdminMsgWithdraw(t.Context(), tim.AdminMsgWithdrawRequest{FromAccount: p.From, ToAccount: p.To, MsgKey: p.MsgKey}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cov, err := store.Coverage(t.Context(), job.ID)
	if err != nil || cov == nil || len(cov.Targets) != 1 {
		t.Fatalf("coverage recorded = %+v, %v", cov, err)
	}
	if tc := cov.Targets[0]; !tc.Done || len(tc.Sides) != 2 || tc.Sides[1] != SidePeer || tc.Scanned != 170+125 || tc.FirstTime == 0 || tc.LastTime < tc.FirstTime {
		t.Fatalf("the conversation's coverage = %+v, want both sides read (170 messages, 125 left on alice's side)", tc)
	}
	j, _ := store.Get(t.Context(), job.ID)
	if len(queued) != 150 || j.Counts.Planned != 150 {
		t.Fatalf("queued %d recalls, planned %d; want alice's 150", len(queued), j.Counts.Planned)
	}
	for _, m := range env.Emu.C2CMessages("alice", "bob") {
		if m.From == "alice" && !m.Recalled {
			t.Fatalf("alice's %s is not recalled", m.MsgKey)
		}
		if m.From == "bob" && m.Recalled {
			t.Fatalf("bob's %s was recalled", m.MsgKey)
		}
	}
}

// leftIM answers get_joined_group_list as if the user had left the groups
// in left (the emulator has no delete_group_member); every other call goes
// to the emulator.
type leftIM struct {
	IM
	left map[string]bool
}

func (l leftIM) JoinedGroupPages(ctx context.Context, req tim.GetJoinedGroupListRequest) iter.Seq2[*tim.GetJoinedGroupListResponse, error] {
	return func(yield func(*tim.GetJoinedGroupListResponse, error) bool) {
		for page, err := range l.IM.JoinedGroupPages(ctx, req) {
			if page != nil {
				kept := *page
				kept.GroupIDList = nil
				for _, g := range page.GroupIDList {
					if !l.left[g.GroupID] {
						kept.GroupIDList = append(kept.GroupIDList, g)
					}
				}
				page = &kept
			}
			if !yield(page, err) {
				return
			}
		}
	}
}

// TestPurgeUserReadsGroupsLeftThatTheIndexKnows: a scan lists only the
// groups the user is in now. Groups in which the callback index holds the
// user's messages are added to the scan; those that cannot be read are
// named in the groups-left gap.
func TestPurgeUserReadsGroupsLeftThatTheIndexKnows(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "alice", "bob")
	g1 := env.Group(t, "Public", "g1", "alice", "bob")
	g2 := env.Group(t, "Work", "g2", "alice", "bob")
	env.SendGroup(t, g1, "", 10, "alice", "bob")
	env.SendGroup(t, g2, "", 30, "alice", "bob")
	im := leftIM{IM: env.Client, left: map[string]bool{g2: true}}
	spec := UserPurge{User: "alice", Peers: []string{"bob"}}
	scans, rep, err := UserScans(t.Context(), im, spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(scans) != 2 { // g1 and the chat with bob
		t.Fatalf("scans of a user who left g2: %+v", scans)
	}
	scans, err = AddIndexedGroups(t.Context(), im, spec, scans, rep, map[string]bool{g1: true, g2: true, "@TGS#gone": true})
	if err != nil {
		t.Fatal(err)
	}
	tally := &Tally{}
	if err := RunScans(t.Context(), im, scans, 4, tally, rep); err != nil {
		t.Fatal(err)
	}
	if tally.Count() != 5+15 || rep.GroupMsgs != 20 {
		t.Fatalf("found %d (group %d) of alice's 20 group messages, 15 of them in the group she left", tally.Count(), rep.GroupMsgs)
	}
	var gap *jobs.Gap
	for i, g := range rep.Gaps {
		if g.Kind == jobs.GapGroupsLeft {
			gap = &rep.Gaps[i]
		}
	}
	if gap == nil || len(gap.Groups) != 1 || gap.Groups[0] != "@TGS#gone" || !strings.Contains(gap.What, g2) {
		t.Fatalf("groups-left gap = %+v, want it to name @TGS#gone and say %s was added", gap, g2)
	}
}

// TestGroupScansNameEachGroupOnce: a group given twice is scanned once (a
// helper's attack: the dry run counted its messages twice).
func TestGroupScansNameEachGroupOnce(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "a")
	g1 := env.Group(t, "Public", "@TGS#twice1", "a")
	g2 := env.Group(t, "Public", "@TGS#twice2", "a")
	scans, _, err := GroupScans(t.Context(), env.Client, GroupPurge{Groups: []string{g2, g1, g2, g2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(scans) != 2 || scans[0].Target.GroupID != g2 || scans[1].Target.GroupID != g1 {
		t.Fatalf("scans %+v, want %s then %s, once each", scans, g2, g1)
	}
}

// kickedWhileListed is the real client, except that the user is removed
// from one more group of kick (an operator's script kicking the spammer
// out) each time the first page of the user's groups has been read.
type kickedWhileListed struct {
	*tim.Client
	user string
	kick *[]string
}

func (k kickedWhileListed) JoinedGroupPages(ctx context.Context, req tim.GetJoinedGroupListRequest) iter.Seq2[*tim.GetJoinedGroupListResponse, error] {
	return func(yield func(*tim.GetJoinedGroupListResponse, error) bool) {
		first := true
		for page, err := range k.Client.JoinedGroupPages(ctx, req) {
			if !yield(page, err) {
				return
			}
			if first && err == nil && len(*k.kick) > 0 {
				first = false
				g := (*k.kick)[0]
				*k.kick = (*k.kick)[1:]
				if _, err := k.Client.DeleteGroupMember(ctx, tim.DeleteGroupMemberRequest{GroupID: g, MemberToDelAccount: []string{k.user}}); err != nil {
					yield(nil, err)
					return
				}
			}
		}
	}
}

// TestPurgeUserListsEveryGroupWhenKickedDuringTheListing:
// get_joined_group_list pages by offset, 1000 groups a page. A spammer in
// 1001 groups kicked out of one of the first 1000 while the list was read
// moved the 1001st group up to the first page's end, which the second page
// (offset 1000) no longer held: the purge never scanned a group the user was
// still in, and reported no gap for it. In three pages of groups and kicked
// out of one more group at every reading, the list still settles.
func TestPurgeUserListsEveryGroupWhenKickedDuringTheListing(t *testing.T) {
	env := imtest.Start(t, emulator.Config{})
	env.Accounts(t, "spammer", "owner")
	const n = 2002
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("@TGS#kick%04d", i)
		env.Group(t, "Public", ids[i], "owner", "spammer")
	}
	last := env.SendGroup(t, ids[n-1], "", 1, "spammer")
	kick := slices.Clone(ids[:10])
	im := kickedWhileListed{Client: env.Client, user: "spammer", kick: &kick}
	scans, _, err := UserScans(t.Context(), im, UserPurge{User: "spammer"})
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]int{}
	for _, s := range scans {
		listed[s.Target.GroupID]++
	}
	for _, id := range ids[len(ids)-2:] {
		if listed[id] != 1 {
			t.Fatalf("group %s (the spammer's seq %v is in the last), in which they still are, was listed %d times (want once); %d groups listed",
				id, last, listed[id], len(listed))
		}
	}
	for id, c := range listed {
		if c != 1 {
			t.Fatalf("group %s listed %d times", id, c)
		}
	}
}
