package emulator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// handlers maps "service/command" to its handler.
var handlers = map[string]handler{
	"im_open_login_svc/account_import":          api(70402, (*Server).accountImport),
	"im_open_login_svc/multiaccount_import":     api(70402, (*Server).multiAccountImport),
	"group_open_http_svc/create_group":          api(10004, (*Server).createGroup),
	"group_open_http_svc/add_group_member":      api(10004, (*Server).addGroupMember),
	"group_open_http_svc/delete_group_member":   api(10004, (*Server).deleteGroupMember),
	"group_open_http_svc/send_group_msg":        api(10004, (*Server).sendGroupMsg),
	"group_open_http_svc/group_msg_recall":      api(10004, (*Server).groupMsgRecall),
	"group_open_http_svc/group_msg_get_simple":  api(10004, (*Server).groupMsgGetSimple),
	"group_open_http_svc/get_joined_group_list": api(10004, (*Server).getJoinedGroupList),
	"group_open_http_svc/get_group_info":        api(10004, (*Server).getGroupInfo),
	"million_group_open_http_svc/create_topic":  api(10004, (*Server).createTopic),
	"million_group_open_http_svc/get_topic":     api(10004, (*Server).getTopic),
	"openim/sendmsg":                            api(90001, (*Server).sendMsg),
	"openim/admin_msgwithdraw":                  api(90001, (*Server).adminMsgWithdraw),
	"openim/admin_getroammsg":                   api(90001, (*Server).adminGetRoamMsg),
	"openim/delete_c2c_msg_ramble":              api(90001, (*Server).deleteC2CMsgRamble),
}

// api makes a handler of a typed one: it decodes the body into a Req and
// answers code (the API's parameter error) when the body does not fit.
func api[Req any](code int, h func(*Server, *Req) (any, *apiError)) handler {
	return func(s *Server, body []byte) (any, *apiError) {
		var req Req
		if err := json.Unmarshal(body, &req); err != nil {
			return nil, fail(code, "invalid request body: %v", err)
		}
		return h(s, &req)
	}
}

// groupByID returns the group id names, or error 10010. The caller holds s.mu.
func (s *Server) groupByID(id string) (*group, *apiError) {
	g, known := s.groups[id]
	if !known {
		return nil, fail(10010, "group %s does not exist", id)
	}
	return g, nil
}

// topicGroup returns the group id names, which must support topics. The
// caller holds s.mu.
func (s *Server) topicGroup(id string) (*group, *apiError) {
	g, e := s.groupByID(id)
	if e == nil && !g.supportTopic {
		return nil, fail(10004, "group %s does not support topics", g.id)
	}
	return g, e
}

// historyOf returns the history of g's topic (of g itself when topicID is
// empty), or error 10004 when g has no such topic.
func historyOf(g *group, topicID string) (*[]gmsg, *apiError) {
	h, found := g.history(topicID)
	if !found {
		return nil, fail(10004, "TopicId %q: no such topic in %s", topicID, g.id)
	}
	return h, nil
}

// account returns the index of the imported account name, or code with a
// message naming field when name is empty or was not imported. The caller
// holds s.mu.
func (s *Server) account(field, name string, code int) (uint32, *apiError) {
	u, known := s.userIdx[name]
	if name == "" || !known {
		return 0, fail(code, "%s %q missing or does not exist", field, name)
	}
	return u, nil
}

// conversation returns the indexes of the operator and the peer of a
// one-to-one conversation. The caller holds s.mu.
func (s *Server) conversation(operator, peer string) (uint32, uint32, *apiError) {
	op, e := s.account("Operator_Account", operator, 90008)
	if e != nil {
		return 0, 0, e
	}
	p, e := s.account("Peer_Account", peer, 90003)
	return op, p, e
}

// sender returns the index of a message's sender: from, or the app admin
// when from is empty. The caller holds s.mu.
func (s *Server) sender(from string, code int) (uint32, *apiError) {
	if from == "" {
		from = s.cfg.Admin
	}
	return s.account("From_Account", from, code)
}

// msgBody is a message body element, kept only to check its shape.
type msgBody struct {
	MsgType    string          `json:"MsgType"`
	MsgContent json.RawMessage `json:"MsgContent"`
}

func checkBody(b []msgBody) bool {
	if len(b) == 0 {
		return false
	}
	for _, e := range b {
		if e.MsgType == "" {
			return false
		}
	}
	return true
}

func textBody(seq int) []msgBody {
	c, _ := json.Marshal(map[string]string{"Text": fmt.Sprintf("message %d", seq)})
	return []msgBody{{MsgType: "TIMTextElem", MsgContent: c}}
}

// --- accounts ---

type accountImportReq struct {
	UserID string `json:"UserID"`
}

func (s *Server) accountImport(req *accountImportReq) (any, *apiError) {
	if req.UserID == "" || len(req.UserID) > 32 {
		return nil, fail(70402, "UserID %q: want 1 to 32 characters", req.UserID)
	}
	s.mu.Lock()
	s.addUser(req.UserID)
	s.mu.Unlock()
	return ok(), nil
}

type multiAccountImportReq struct {
	Accounts []string `json:"Accounts"`
}

func (s *Server) multiAccountImport(req *multiAccountImportReq) (any, *apiError) {
	if len(req.Accounts) == 0 || len(req.Accounts) > 100 {
		return nil, fail(70402, "Accounts: want 1 to 100, got %d", len(req.Accounts))
	}
	resp := struct {
		reply
		FailAccounts []string `json:"FailAccounts"`
	}{reply: ok(), FailAccounts: []string{}}
	s.mu.Lock()
	for _, a := range req.Accounts {
		if a == "" || len(a) > 32 {
			resp.FailAccounts = append(resp.FailAccounts, a)
			continue
		}
		s.addUser(a)
	}
	s.mu.Unlock()
	return resp, nil
}

// --- groups ---

type memberReq struct {
	MemberAccount string `json:"Member_Account"`
}

type createGroupReq struct {
	OwnerAccount string      `json:"Owner_Account"`
	Type         string      `json:"Type"`
	GroupID      string      `json:"GroupId"`
	Name         string      `json:"Name"`
	SupportTopic int         `json:"SupportTopic"`
	MemberList   []memberReq `json:"MemberList"`
}

func (s *Server) createGroup(req *createGroupReq) (any, *apiError) {
	typ, known := groupTypes[req.Type]
	if !known {
		return nil, fail(10004, "Type %q: want Public, Private, Work, ChatRoom, Meeting, AVChatRoom or Community", req.Type)
	}
	if req.Name == "" {
		return nil, fail(10004, "Name: required")
	}
	if req.SupportTopic == 1 && typ != "Community" {
		return nil, fail(10004, "SupportTopic: only for Community")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.GroupID == "" {
		req.GroupID = s.newGroupID()
	}
	if _, dup := s.groups[req.GroupID]; dup {
		return nil, fail(10021, "GroupId %s is already used", req.GroupID)
	}
	for _, m := range append([]memberReq{{req.OwnerAccount}}, req.MemberList...) {
		if _, known := s.userIdx[m.MemberAccount]; m.MemberAccount != "" && !known {
			return nil, fail(10019, "account %s does not exist", m.MemberAccount)
		}
	}
	now := time.Now().Unix()
	g := &group{id: req.GroupID, typ: typ, name: req.Name, owner: req.OwnerAccount, created: now,
		supportTopic: req.SupportTopic == 1, members: map[uint32]int64{}, topics: map[string]*topic{}}
	s.groups[g.id] = g
	s.groupOrder = append(s.groupOrder, g.id)
	for _, m := range append([]memberReq{{req.OwnerAccount}}, req.MemberList...) {
		if m.MemberAccount != "" {
			s.join(g, s.userIdx[m.MemberAccount], now)
		}
	}
	return struct {
		reply
		GroupID string `json:"GroupId"`
	}{ok(), g.id}, nil
}

func (s *Server) join(g *group, u uint32, at int64) bool {
	if !g.addMember(u, at) {
		return false
	}
	s.joined[u] = append(s.joined[u], g)
	return true
}

type addGroupMemberReq struct {
	GroupID    string      `json:"GroupId"`
	MemberList []memberReq `json:"MemberList"`
}

func (s *Server) addGroupMember(req *addGroupMemberReq) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.groupByID(req.GroupID)
	if e != nil {
		return nil, e
	}
	type result struct {
		MemberAccount string `json:"Member_Account"`
		Result        int    `json:"Result"` // 0 failed, 1 added, 2 already a member
	}
	resp := struct {
		reply
		MemberList []result `json:"MemberList"`
	}{reply: ok()}
	now := time.Now().Unix()
	for _, m := range req.MemberList {
		u, known := s.userIdx[m.MemberAccount]
		r := 0
		if known {
			r = 2
			if s.join(g, u, now) {
				r = 1
			}
		}
		resp.MemberList = append(resp.MemberList, result{m.MemberAccount, r})
	}
	return resp, nil
}

type deleteGroupMemberReq struct {
	GroupID            string   `json:"GroupId"`
	MemberToDelAccount []string `json:"MemberToDel_Account"`
}

// deleteGroupMember removes members: the group leaves their joined list,
// and the groups after it move up one place (get_joined_group_list pages by
// offset).
func (s *Server) deleteGroupMember(req *deleteGroupMemberReq) (any, *apiError) {
	if len(req.MemberToDelAccount) == 0 {
		return nil, fail(10004, "MemberToDel_Account: at least one account")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.groupByID(req.GroupID)
	if e != nil {
		return nil, e
	}
	for _, a := range req.MemberToDelAccount {
		u, known := s.userIdx[a]
		if !known {
			continue
		}
		if _, member := g.members[u]; !member {
			continue
		}
		delete(g.members, u)
		g.memberOrder = slices.DeleteFunc(g.memberOrder, func(m uint32) bool { return m == u })
		s.joined[u] = slices.DeleteFunc(s.joined[u], func(j *group) bool { return j == g })
	}
	return ok(), nil
}

type sendGroupMsgReq struct {
	GroupID               string    `json:"GroupId"`
	TopicID               string    `json:"TopicId"`
	Random                uint32    `json:"Random"`
	FromAccount           string    `json:"From_Account"`
	MsgBody               []msgBody `json:"MsgBody"`
	ForbidCallbackControl []string  `json:"ForbidCallbackControl"`
}

func (s *Server) sendGroupMsg(req *sendGroupMsgReq) (any, *apiError) {
	if !checkBody(req.MsgBody) {
		return nil, fail(10004, "MsgBody: at least one element with a MsgType")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.groupByID(req.GroupID)
	if e != nil {
		return nil, e
	}
	u, e := s.sender(req.FromAccount, 10019)
	if e != nil {
		return nil, e
	}
	now := time.Now().Unix()
	callback := !forbids(req.ForbidCallbackControl, "ForbidAfterSendMsgCallback")
	if g.typ == "AVChatRoom" {
		g.nextSeqAV++
		if callback {
			s.groupSent(g, "", g.nextSeqAV, gmsg{from: u, time: now, random: req.Random})
		}
		return sendGroupReply(g.nextSeqAV, now), nil
	}
	h, e := historyOf(g, req.TopicID)
	if e != nil {
		return nil, e
	}
	m := gmsg{from: u, time: now, random: req.Random}
	*h = append(*h, m)
	if callback {
		s.groupSent(g, req.TopicID, int64(len(*h)), m)
	}
	return sendGroupReply(int64(len(*h)), now), nil
}

// forbids reports whether a send's ForbidCallbackControl names callback
// (ForbidBeforeSendMsgCallback, ForbidAfterSendMsgCallback).
func forbids(control []string, callback string) bool {
	return slices.Contains(control, callback)
}

func sendGroupReply(seq, t int64) any {
	return struct {
		reply
		MsgTime int64 `json:"MsgTime"`
		MsgSeq  int64 `json:"MsgSeq"`
	}{ok(), t, seq}
}

type seqItem struct {
	MsgSeq int64 `json:"MsgSeq"`
}

type recallResult struct {
	MsgSeq  int64 `json:"MsgSeq"`
	RetCode int   `json:"RetCode"`
}

// recallReply carries the per-seq results and how many were injected faults.
type recallReply struct {
	reply
	RecallRetList []recallResult `json:"RecallRetList"`
	faults        int
	history       *[]gmsg
	reached       []int64 // the seqs this call recalled or found recalled
}

func (r recallReply) itemFaults() int { return r.faults }

// answerLost notes that the call's answer was lost; the caller holds s.mu.
func (r recallReply) answerLost() {
	for _, seq := range r.reached {
		(*r.history)[seq-1].lost++
	}
}

type groupMsgRecallReq struct {
	GroupID    string    `json:"GroupId"`
	MsgSeqList []seqItem `json:"MsgSeqList"`
	TopicID    string    `json:"TopicId"`
}

func (s *Server) groupMsgRecall(req *groupMsgRecallReq) (any, *apiError) {
	if req.GroupID == "" {
		return nil, fail(10004, "GroupId: required")
	}
	if n := len(req.MsgSeqList); n == 0 || n > 10 {
		return nil, fail(10004, "MsgSeqList: want 1 to 10 seqs, got %d", n)
	}
	if strings.ContainsAny(req.GroupID, " \t\r\n") {
		return nil, fail(10015, "GroupId %q is invalid", req.GroupID)
	}
	f := s.currentFaults()
	itemFaults := f.ItemCodes
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.groupByID(req.GroupID)
	if e != nil {
		return nil, e
	}
	if g.typ == "AVChatRoom" {
		return nil, fail(10033, "group type AVChatRoom does not support message recall")
	}
	h, e := historyOf(g, req.TopicID)
	if e != nil {
		return nil, e
	}
	resp := recallReply{reply: ok(), history: h}
	for _, it := range req.MsgSeqList {
		code := 0
		for c, p := range itemFaults {
			if s.chance(p) {
				code = c
				resp.faults++
				break
			}
		}
		if code == 0 {
			switch {
			case it.MsgSeq < 1 || it.MsgSeq > int64(len(*h)):
				code = 10030
			case (*h)[it.MsgSeq-1].recalled:
				(*h)[it.MsgSeq-1].requests++
				resp.reached = append(resp.reached, it.MsgSeq)
				code = 10030
			default:
				(*h)[it.MsgSeq-1].recalled = true
				resp.reached = append(resp.reached, it.MsgSeq)
			}
		}
		if code == 0 && s.chance(f.OmitItem) {
			resp.faults++
			continue
		}
		resp.RecallRetList = append(resp.RecallRetList, recallResult{it.MsgSeq, code})
	}
	return resp, nil
}

type groupMsgOut struct {
	FromAccount  string    `json:"From_Account"`
	IsPlaceMsg   int       `json:"IsPlaceMsg"`
	MsgBody      []msgBody `json:"MsgBody"`
	MsgPriority  int       `json:"MsgPriority"`
	MsgRandom    uint32    `json:"MsgRandom"`
	MsgSeq       int64     `json:"MsgSeq"`
	MsgTimeStamp int64     `json:"MsgTimeStamp"`
}

type groupMsgGetSimpleReq struct {
	GroupID         string `json:"GroupId"`
	ReqMsgNumber    int    `json:"ReqMsgNumber"`
	ReqMsgSeq       int64  `json:"ReqMsgSeq"`
	WithRecalledMsg int    `json:"WithRecalledMsg"`
	TopicID         string `json:"TopicId"`
}

func (s *Server) groupMsgGetSimple(req *groupMsgGetSimpleReq) (any, *apiError) {
	if req.ReqMsgNumber < 1 || req.ReqMsgNumber > 20 {
		return nil, fail(10004, "ReqMsgNumber %d: want 1 to 20", req.ReqMsgNumber)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, e := s.groupByID(req.GroupID)
	if e != nil {
		return nil, e
	}
	if g.typ == "AVChatRoom" {
		return nil, fail(10007, "AVChatRoom keeps no message history")
	}
	h, e := historyOf(g, req.TopicID)
	if e != nil {
		return nil, e
	}
	// A page is a window of seqs, [ReqMsgSeq-ReqMsgNumber+1, ReqMsgSeq]:
	// recalled messages in it are left out unless WithRecalledMsg is 1, so
	// a window of recalled messages comes back short, or empty, although
	// older messages exist (tencentcloud.com/document/product/1047/34971).
	seq := int64(len(*h))
	if req.ReqMsgSeq > 0 && req.ReqMsgSeq < seq {
		seq = req.ReqMsgSeq
	}
	list := []groupMsgOut{}
	for low := seq - int64(req.ReqMsgNumber) + 1; seq >= 1 && seq >= low; seq-- {
		m := (*h)[seq-1]
		out := groupMsgOut{FromAccount: s.users[m.from], MsgPriority: 1, MsgRandom: m.random, MsgSeq: seq, MsgTimeStamp: m.time}
		if m.recalled {
			if req.WithRecalledMsg != 1 {
				continue
			}
			out.IsPlaceMsg = 2
		} else {
			out.MsgBody = textBody(int(seq))
		}
		list = append(list, out)
	}
	return struct {
		reply
		GroupID    string        `json:"GroupId"`
		IsFinished int           `json:"IsFinished"`
		RspMsgList []groupMsgOut `json:"RspMsgList"`
	}{ok(), g.id, 1, list}, nil
}

type responseFilter struct {
	GroupBaseInfoFilter []string `json:"GroupBaseInfoFilter"`
	SelfInfoFilter      []string `json:"SelfInfoFilter"`
}

// baseInfo returns the group fields the filter asks for (all when empty).
func (s *Server) baseInfo(g *group, filter []string) map[string]any {
	all := map[string]any{
		"Type": g.typ, "Name": g.name, "Owner_Account": g.owner, "CreateTime": g.created,
		"NextMsgSeq": int64(len(g.msgs)) + 1 + g.nextSeqAV, "MemberNum": len(g.members), "LastMsgTime": lastTime(g.msgs),
	}
	if len(filter) == 0 {
		return all
	}
	out := map[string]any{}
	for _, f := range filter {
		if v, ok := all[f]; ok {
			out[f] = v
		}
	}
	return out
}

func lastTime(h []gmsg) int64 {
	if len(h) == 0 {
		return 0
	}
	return h[len(h)-1].time
}

type getJoinedGroupListReq struct {
	MemberAccount  string          `json:"Member_Account"`
	Limit          int             `json:"Limit"`
	Offset         int             `json:"Offset"`
	GroupType      string          `json:"GroupType"`
	WithHugeGroups int             `json:"WithHugeGroups"`
	ResponseFilter *responseFilter `json:"ResponseFilter"`
}

func (s *Server) getJoinedGroupList(req *getJoinedGroupListReq) (any, *apiError) {
	if req.MemberAccount == "" {
		return nil, fail(10004, "Member_Account: required")
	}
	if req.Limit < 0 || req.Limit > 5000 || req.Offset < 0 {
		return nil, fail(10004, "Limit %d / Offset %d: want Limit 0 to 5000 and Offset ≥ 0", req.Limit, req.Offset)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, known := s.userIdx[req.MemberAccount]
	if !known {
		return nil, fail(70107, "account %s was not imported", req.MemberAccount)
	}
	var list []*group
	for _, g := range s.joined[u] {
		if g.typ == "AVChatRoom" && req.WithHugeGroups != 1 {
			continue
		}
		if req.GroupType != "" && groupTypes[req.GroupType] != g.typ {
			continue
		}
		list = append(list, g)
	}
	total := len(list)
	if req.Limit > 0 {
		start := min(req.Offset, len(list))
		list = list[start:min(start+req.Limit, len(list))]
	}
	out := make([]map[string]any, 0, len(list))
	for _, g := range list {
		m := map[string]any{"GroupId": g.id}
		if req.ResponseFilter != nil {
			for k, v := range s.baseInfo(g, req.ResponseFilter.GroupBaseInfoFilter) {
				m[k] = v
			}
		}
		out = append(out, m)
	}
	return struct {
		reply
		TotalCount  int              `json:"TotalCount"`
		GroupIDList []map[string]any `json:"GroupIdList"`
	}{ok(), total, out}, nil
}

type getGroupInfoReq struct {
	GroupIDList    []string        `json:"GroupIdList"`
	ResponseFilter *responseFilter `json:"ResponseFilter"`
}

func (s *Server) getGroupInfo(req *getGroupInfoReq) (any, *apiError) {
	if n := len(req.GroupIDList); n == 0 || n > 50 {
		return nil, fail(10004, "GroupIdList: want 1 to 50 groups, got %d", n)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var filter []string
	if req.ResponseFilter != nil {
		filter = req.ResponseFilter.GroupBaseInfoFilter
	}
	out := []map[string]any{}
	for _, id := range req.GroupIDList {
		g, known := s.groups[id]
		if !known {
			out = append(out, map[string]any{"GroupId": id, "ErrorCode": 10010, "ErrorInfo": "group does not exist"})
			continue
		}
		m := s.baseInfo(g, filter)
		m["GroupId"], m["ErrorCode"], m["ErrorInfo"] = g.id, 0, ""
		out = append(out, m)
	}
	return struct {
		reply
		GroupInfo []map[string]any `json:"GroupInfo"`
	}{ok(), out}, nil
}

// --- topics ---

type createTopicReq struct {
	GroupID   string `json:"GroupId"`
	TopicID   string `json:"TopicId"`
	TopicName string `json:"TopicName"`
}

func (s *Server) createTopic(req *createTopicReq) (any, *apiError) {
	if req.TopicName == "" {
		return nil, fail(10004, "TopicName: required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, e := s.topicGroup(req.GroupID)
	if e != nil {
		return nil, e
	}
	if req.TopicID == "" {
		s.topicSeq++
		req.TopicID = fmt.Sprintf("%s@TOPIC#_%d", g.id, s.topicSeq)
	}
	if _, dup := g.topics[req.TopicID]; dup {
		return nil, fail(10021, "TopicId %s is already used", req.TopicID)
	}
	g.topics[req.TopicID] = &topic{id: req.TopicID, name: req.TopicName, created: time.Now().Unix()}
	g.topicOrder = append(g.topicOrder, req.TopicID)
	return struct {
		reply
		TopicID string `json:"TopicId"`
	}{ok(), req.TopicID}, nil
}

type getTopicReq struct {
	GroupID     string   `json:"GroupId"`
	FromAccount string   `json:"From_Account"`
	TopicIDList []string `json:"TopicIdList"`
}

// topicOut is a TopicInfo of get_topic.
type topicOut struct {
	TopicID     string `json:"TopicId"`
	TopicName   string `json:"TopicName,omitempty"`
	GroupID     string `json:"GroupID"`
	CreateTime  int64  `json:"CreateTime,omitempty"`
	NextMsgSeq  int64  `json:"NextMsgSeq,omitempty"`
	LastMsgTime int64  `json:"LastMsgTime,omitempty"`
}

// topicItem is one entry of get_topic's TopicAndSelfInfo: a topic
// described, or ErrorCode and ErrorInfo for a topic that cannot be.
type topicItem struct {
	ErrorCode int      `json:"ErrorCode"`
	ErrorInfo string   `json:"ErrorInfo"`
	TopicInfo topicOut `json:"TopicInfo"`
}

// topicReply carries get_topic's entries and how many were injected faults.
type topicReply struct {
	reply
	TopicAndSelfInfo []topicItem `json:"TopicAndSelfInfo"`
	faults           int
}

func (r topicReply) itemFaults() int { return r.faults }

func (s *Server) getTopic(req *getTopicReq) (any, *apiError) {
	if req.FromAccount == "" {
		// Documented as required (trtc.io/document/49469: From_Account 必填).
		return nil, fail(10003, "From_Account is required")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, e := s.topicGroup(req.GroupID)
	if e != nil {
		return nil, e
	}
	ids := req.TopicIDList
	if len(ids) == 0 {
		ids = g.topicOrder
	}
	faults := s.currentFaults().TopicCodes
	resp := topicReply{reply: ok(), TopicAndSelfInfo: []topicItem{}}
	for _, id := range ids {
		t, known := g.topics[id]
		if code := faults[id]; code != 0 {
			resp.TopicAndSelfInfo = append(resp.TopicAndSelfInfo, topicItem{ErrorCode: code,
				ErrorInfo: fmt.Sprintf("injected fault %d", code), TopicInfo: topicOut{TopicID: id, GroupID: g.id}})
			resp.faults++
			continue
		}
		if !known {
			resp.TopicAndSelfInfo = append(resp.TopicAndSelfInfo, topicItem{ErrorCode: 10010, ErrorInfo: "topic does not exist", TopicInfo: topicOut{TopicID: id, GroupID: g.id}})
			continue
		}
		resp.TopicAndSelfInfo = append(resp.TopicAndSelfInfo, topicItem{TopicInfo: topicOut{TopicID: t.id, TopicName: t.name,
			GroupID: g.id, CreateTime: t.created, NextMsgSeq: int64(len(t.msgs)) + 1, LastMsgTime: lastTime(t.msgs)}})
	}
	return resp, nil
}

// --- one-to-one ---

type sendMsgReq struct {
	FromAccount string    `json:"From_Account"`
	ToAccount   string    `json:"To_Account"`
	MsgRandom   uint32    `json:"MsgRandom"`
	MsgBody     []msgBody `json:"MsgBody"`
	// SyncOtherMachine 2 keeps the message off the sender's side (their
	// other devices and roaming history); 1 or absent syncs it.
	SyncOtherMachine      int      `json:"SyncOtherMachine"`
	ForbidCallbackControl []string `json:"ForbidCallbackControl"`
}

func (s *Server) sendMsg(req *sendMsgReq) (any, *apiError) {
	if !checkBody(req.MsgBody) {
		return nil, fail(90005, "MsgBody: at least one element with a MsgType")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fu, e := s.sender(req.FromAccount, 90008)
	if e != nil {
		return nil, e
	}
	tu, e := s.account("To_Account", req.ToAccount, 90003)
	if e != nil {
		return nil, e
	}
	now := time.Now().Unix()
	k := pair(fu, tu)
	c := s.convs[k]
	if c == nil {
		c = &conv{}
		s.convs[k] = c
	}
	m := cmsg{from: fu, to: tu, time: now, random: req.MsgRandom}
	if req.SyncOtherMachine == 2 {
		m.deletedFor = deletedForSender
	}
	c.msgs = append(c.msgs, m)
	if !forbids(req.ForbidCallbackControl, "ForbidAfterSendMsgCallback") {
		s.c2cSent(m, len(c.msgs))
	}
	return struct {
		reply
		MsgTime int64  `json:"MsgTime"`
		MsgKey  string `json:"MsgKey"`
	}{ok(), now, m.key(len(c.msgs))}, nil
}

// findC2C finds a message by MsgKey in the conversation of from and to, sent
// by from.
func (s *Server) findC2C(from, to uint32, key string) (*cmsg, bool) {
	seq, random, ts, _ := parseMsgKey(key)
	c := s.convs[pair(from, to)]
	if c == nil || seq < 1 || seq > len(c.msgs) {
		return nil, false
	}
	m := &c.msgs[seq-1]
	if m.random != random || m.time != ts || m.from != from {
		return nil, false
	}
	return m, true
}

// deleteC2CMsgRamble deletes one-to-one messages from one side of a
// conversation only (doc/101439): the peer still sees them, and they can
// still be recalled.
type deleteC2CMsgRambleReq struct {
	OperatorAccount string   `json:"Operator_Account"`
	PeerAccount     string   `json:"Peer_Account"`
	MsgKeyList      []string `json:"MsgKeyList"`
}

func (s *Server) deleteC2CMsgRamble(req *deleteC2CMsgRambleReq) (any, *apiError) {
	if len(req.MsgKeyList) == 0 || len(req.MsgKeyList) > 30 {
		return nil, fail(90001, "MsgKeyList: want 1 to 30 keys, got %d", len(req.MsgKeyList))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op, peer, e := s.conversation(req.OperatorAccount, req.PeerAccount)
	if e != nil {
		return nil, e
	}
	invalid := []string{}
	c := s.convs[pair(op, peer)]
	for _, k := range req.MsgKeyList {
		seq, random, ts, well := parseMsgKey(k)
		if !well || c == nil || seq < 1 || seq > len(c.msgs) || c.msgs[seq-1].random != random || c.msgs[seq-1].time != ts {
			invalid = append(invalid, k)
			continue
		}
		m := &c.msgs[seq-1]
		if m.from == op {
			m.deletedFor |= deletedForSender
		} else {
			m.deletedFor |= deletedForReceiver
		}
	}
	return struct {
		reply
		InvalidMsgKeyList []string `json:"InvalidMsgKeyList"`
	}{ok(), invalid}, nil
}

type adminMsgWithdrawReq struct {
	FromAccount string `json:"From_Account"`
	ToAccount   string `json:"To_Account"`
	MsgKey      string `json:"MsgKey"`
}

func (s *Server) adminMsgWithdraw(req *adminMsgWithdrawReq) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fu, e := s.account("From_Account", req.FromAccount, 90008)
	if e != nil {
		return nil, e
	}
	tu, e := s.account("To_Account", req.ToAccount, 90003)
	if e != nil {
		return nil, e
	}
	if _, _, _, well := parseMsgKey(req.MsgKey); !well {
		return nil, fail(90054, "MsgKey %q is invalid", req.MsgKey)
	}
	m, found := s.findC2C(fu, tu, req.MsgKey)
	if !found {
		return nil, fail(20022, "the message to recall does not exist")
	}
	seq, _, _, _ := parseMsgKey(req.MsgKey)
	reached := withdrawReply{conv: s.convs[pair(fu, tu)], seq: seq}
	if m.recalled {
		m.requests++
		return reached, fail(20023, "the message was already recalled")
	}
	m.recalled = true
	reached.reply = ok()
	return reached, nil
}

// withdrawReply is admin_msgwithdraw's answer; seq of conv is the message
// it reached.
type withdrawReply struct {
	reply
	conv *conv
	seq  int
}

// answerLost notes that the call's answer was lost; the caller holds s.mu.
func (r withdrawReply) answerLost() { r.conv.msgs[r.seq-1].lost++ }

type c2cOut struct {
	FromAccount   string    `json:"From_Account"`
	ToAccount     string    `json:"To_Account"`
	MsgSeq        int       `json:"MsgSeq"`
	MsgRandom     uint32    `json:"MsgRandom"`
	MsgTimeStamp  int64     `json:"MsgTimeStamp"`
	MsgFlagBits   int       `json:"MsgFlagBits"`
	MsgKey        string    `json:"MsgKey"`
	MsgBody       []msgBody `json:"MsgBody"`
	MsgClientTime int64     `json:"MsgClientTime"`
}

// roamPageBytes is the documented 13 KB cap on one answer of admin_getroammsg.
const roamPageBytes = 13 << 10

type adminGetRoamMsgReq struct {
	OperatorAccount string `json:"Operator_Account"`
	PeerAccount     string `json:"Peer_Account"`
	FromAccount     string `json:"From_Account"` // older docs
	ToAccount       string `json:"To_Account"`
	MaxCnt          int    `json:"MaxCnt"`
	MinTime         int64  `json:"MinTime"`
	MaxTime         int64  `json:"MaxTime"`
	LastMsgKey      string `json:"LastMsgKey"`
}

func (s *Server) adminGetRoamMsg(req *adminGetRoamMsgReq) (any, *apiError) {
	if req.OperatorAccount == "" {
		req.OperatorAccount, req.PeerAccount = req.FromAccount, req.ToAccount
	}
	if req.MaxCnt <= 0 {
		return nil, fail(90001, "MaxCnt %d: want a positive number", req.MaxCnt)
	}
	if req.MaxTime == 0 {
		req.MaxTime = time.Now().Unix()
	}
	if req.MinTime > req.MaxTime {
		return nil, fail(90001, "MinTime %d is after MaxTime %d", req.MinTime, req.MaxTime)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	op, peer, e := s.conversation(req.OperatorAccount, req.PeerAccount)
	if e != nil {
		return nil, e
	}
	var msgs []cmsg
	if c := s.convs[pair(op, peer)]; c != nil {
		msgs = c.msgs
	}
	// Newest first; continue after LastMsgKey when given.
	i := len(msgs) - 1
	if req.LastMsgKey != "" {
		seq, _, _, well := parseMsgKey(req.LastMsgKey)
		if !well || seq < 1 || seq > len(msgs) {
			return nil, fail(90001, "LastMsgKey %q is invalid", req.LastMsgKey)
		}
		i = seq - 2
	}
	var out []c2cOut
	size := 200
	for ; i >= 0 && len(out) < req.MaxCnt; i-- {
		m := msgs[i]
		if m.time > req.MaxTime || !m.visibleTo(op) {
			continue
		}
		if m.time < req.MinTime {
			i = -1
			break
		}
		o := c2cOut{FromAccount: s.users[m.from], ToAccount: s.users[m.to], MsgSeq: i + 1, MsgRandom: m.random,
			MsgTimeStamp: m.time, MsgClientTime: m.time, MsgKey: m.key(i + 1), MsgBody: textBody(i + 1)}
		if m.recalled {
			o.MsgFlagBits, o.MsgBody = 8, []msgBody{}
		}
		b, _ := json.Marshal(o)
		if size+len(b) > roamPageBytes && len(out) > 0 {
			break
		}
		size += len(b) + 1
		out = append(out, o)
	}
	complete := 1
	// More remain if the loop stopped before the oldest message in range.
	for j := i; j >= 0; j-- {
		if msgs[j].time < req.MinTime {
			break
		}
		if msgs[j].time <= req.MaxTime {
			complete = 0
			break
		}
	}
	resp := struct {
		reply
		Complete    int      `json:"Complete"`
		MsgCnt      int      `json:"MsgCnt"`
		LastMsgTime int64    `json:"LastMsgTime"`
		LastMsgKey  string   `json:"LastMsgKey"`
		MsgList     []c2cOut `json:"MsgList"`
	}{reply: ok(), Complete: complete, MsgCnt: len(out), MsgList: out}
	if resp.MsgList == nil {
		resp.MsgList = []c2cOut{}
	}
	if n := len(out); n > 0 {
		resp.LastMsgTime, resp.LastMsgKey = out[n-1].MsgTimeStamp, out[n-1].MsgKey
	}
	return resp, nil
}
