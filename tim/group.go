package tim

import (
	"context"
	"fmt"
)

// MaxRecallSeqs is the most seqs group_msg_recall takes per call.
const MaxRecallSeqs = 10

// MsgSeqItem is one element of group_msg_recall's MsgSeqList.
type MsgSeqItem struct {
	MsgSeq int64 `json:"MsgSeq"`
}

// GroupMsgRecallRequest recalls 1 to 10 messages of a group, or of one topic
// of a community when TopicID is set.
type GroupMsgRecallRequest struct {
	GroupID    string       `json:"GroupId"`
	MsgSeqList []MsgSeqItem `json:"MsgSeqList"`
	TopicID    string       `json:"TopicId,omitempty"`
	Reason     string       `json:"Reason,omitempty"` // ≤ 100 bytes
}

// ItemResult is the outcome of one seq of a group_msg_recall call. Classify
// RetCode with Classify; 0 is success.
type ItemResult struct {
	MsgSeq  int64  `json:"MsgSeq"`
	RetCode int    `json:"RetCode"`
	MsgKey  string `json:"MsgKey,omitempty"`
}

// Class returns Classify(r.RetCode).
func (r ItemResult) Class() Class { return Classify(r.RetCode) }

// GroupMsgRecallResponse is the answer of group_msg_recall. A call can
// succeed (ErrorCode 0) while items fail: check every RetCode.
type GroupMsgRecallResponse struct {
	Response
	RecallRetList []ItemResult `json:"RecallRetList"`
}

// GroupMsgRecall calls group_msg_recall. The request must name a group and 1
// to 10 distinct positive seqs; otherwise it is refused with
// ErrInvalidRequest before anything is sent.
func (c *Client) GroupMsgRecall(ctx context.Context, req GroupMsgRecallRequest) (*GroupMsgRecallResponse, error) {
	if err := validateRecall(req); err != nil {
		return nil, err
	}
	var resp GroupMsgRecallResponse
	if err := c.call(ctx, GroupMsgRecall, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

func validateRecall(req GroupMsgRecallRequest) error {
	if req.GroupID == "" {
		return invalid(GroupMsgRecall, "GroupId is empty")
	}
	if n := len(req.MsgSeqList); n < 1 || n > MaxRecallSeqs {
		return invalid(GroupMsgRecall, "MsgSeqList has %d seqs, want 1 to %d", n, MaxRecallSeqs)
	}
	seen := make(map[int64]bool, len(req.MsgSeqList))
	for _, it := range req.MsgSeqList {
		if it.MsgSeq <= 0 {
			return invalid(GroupMsgRecall, "MsgSeq %d is not positive", it.MsgSeq)
		}
		if seen[it.MsgSeq] {
			return invalid(GroupMsgRecall, "MsgSeq %d appears twice", it.MsgSeq)
		}
		seen[it.MsgSeq] = true
	}
	return nil
}

// RecallGroup recalls seqs (1 to 10) of a group or topic with one
// group_msg_recall call and returns one result per requested seq, in the
// order of seqs. If the answer lacks a result for some seq, RecallGroup
// returns the results it has (RetCodeMissing for the missing ones) and an
// error wrapping ErrIncompleteResult.
func (c *Client) RecallGroup(ctx context.Context, groupID, topicID string, seqs []int64) ([]ItemResult, error) {
	req := GroupMsgRecallRequest{GroupID: groupID, TopicID: topicID, MsgSeqList: make([]MsgSeqItem, len(seqs))}
	for i, s := range seqs {
		req.MsgSeqList[i] = MsgSeqItem{MsgSeq: s}
	}
	resp, err := c.GroupMsgRecall(ctx, req)
	if err != nil {
		return nil, err
	}
	got := make(map[int64]ItemResult, len(resp.RecallRetList))
	for _, r := range resp.RecallRetList {
		got[r.MsgSeq] = r
	}
	out := make([]ItemResult, len(seqs))
	var missing []int64
	for i, s := range seqs {
		r, ok := got[s]
		if !ok {
			r = ItemResult{MsgSeq: s, RetCode: RetCodeMissing}
			missing = append(missing, s)
		}
		out[i] = r
	}
	if len(missing) > 0 {
		return out, &Error{API: GroupMsgRecall.Name(), HTTPStatus: 200,
			Err: fmt.Errorf("%w: no RecallRetList entry for seqs %v", ErrIncompleteResult, missing)}
	}
	return out, nil
}

// RetCodeMissing is RecallGroup's RetCode for a seq its answer has no
// result for.
const RetCodeMissing = -1

// MaxGetSimpleMsgs is the most messages group_msg_get_simple returns per call.
const MaxGetSimpleMsgs = 20

// GroupMsgGetSimpleRequest pulls up to 20 messages of a group (or topic) with
// seq ≤ ReqMsgSeq, newest first; ReqMsgSeq 0 means from the newest.
type GroupMsgGetSimpleRequest struct {
	GroupID         string `json:"GroupId"`
	ReqMsgNumber    int    `json:"ReqMsgNumber"`
	ReqMsgSeq       int64  `json:"ReqMsgSeq,omitempty"`
	WithRecalledMsg int    `json:"WithRecalledMsg,omitempty"` // 1: also return recalled messages
	TopicID         string `json:"TopicId,omitempty"`
}

// IsPlaceMsg values of a pulled group message.
const (
	PlaceMsgNormal   = 0 // a normal message
	PlaceMsgDeleted  = 1 // deleted or expired; MsgBody is empty
	PlaceMsgRecalled = 2 // recalled
)

// GroupMsg is one message pulled by group_msg_get_simple.
type GroupMsg struct {
	FromAccount  string        `json:"From_Account"`
	IsPlaceMsg   int           `json:"IsPlaceMsg"`
	IsSystemMsg  int           `json:"IsSystemMsg,omitempty"`
	MsgBody      []MsgBodyElem `json:"MsgBody"`
	MsgPriority  int           `json:"MsgPriority"`
	MsgRandom    int64         `json:"MsgRandom"`
	MsgSeq       int64         `json:"MsgSeq"`
	MsgTimeStamp int64         `json:"MsgTimeStamp"`
	MsgKey       string        `json:"MsgKey,omitempty"`
}

// IsFinished values of group_msg_get_simple.
const (
	FinishedPartial = 0 // cut short: messages too long or range over 20
	FinishedAll     = 1 // the whole requested range was returned
	FinishedExpired = 2 // cut short, and every message in it had expired
)

// GroupMsgGetSimpleResponse is the answer of group_msg_get_simple.
type GroupMsgGetSimpleResponse struct {
	Response
	GroupID    string     `json:"GroupId"`
	IsFinished int        `json:"IsFinished"`
	RspMsgList []GroupMsg `json:"RspMsgList"`
}

// GroupMsgGetSimple calls group_msg_get_simple. ReqMsgNumber must be 1 to 20.
func (c *Client) GroupMsgGetSimple(ctx context.Context, req GroupMsgGetSimpleRequest) (*GroupMsgGetSimpleResponse, error) {
	switch {
	case req.GroupID == "":
		return nil, invalid(GroupMsgGetSimple, "GroupId is empty")
	case req.ReqMsgNumber < 1 || req.ReqMsgNumber > MaxGetSimpleMsgs:
		return nil, invalid(GroupMsgGetSimple, "ReqMsgNumber %d, want 1 to %d", req.ReqMsgNumber, MaxGetSimpleMsgs)
	case req.ReqMsgSeq < 0:
		return nil, invalid(GroupMsgGetSimple, "ReqMsgSeq %d is negative", req.ReqMsgSeq)
	}
	var resp GroupMsgGetSimpleResponse
	if err := c.call(ctx, GroupMsgGetSimple, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// GetJoinedGroupListRequest lists the groups an account is in, a page of
// Limit (≤ 5000) at Offset.
type GetJoinedGroupListRequest struct {
	MemberAccount      string          `json:"Member_Account"`
	Limit              int             `json:"Limit,omitempty"`
	Offset             int             `json:"Offset,omitempty"`
	GroupType          string          `json:"GroupType,omitempty"`
	WithHugeGroups     int             `json:"WithHugeGroups,omitempty"`     // 1: include AVChatRoom
	WithNoActiveGroups int             `json:"WithNoActiveGroups,omitempty"` // 1: include inactive Work groups
	ResponseFilter     *ResponseFilter `json:"ResponseFilter,omitempty"`
}

// MaxJoinedGroupsPage is the largest Limit get_joined_group_list accepts.
const MaxJoinedGroupsPage = 5000

// SelfInfo is the account's own membership, when SelfInfoFilter asks for it.
type SelfInfo struct {
	Role            string `json:"Role,omitempty"`
	JoinTime        int64  `json:"JoinTime,omitempty"`
	MsgFlag         string `json:"MsgFlag,omitempty"`
	MsgSeq          int64  `json:"MsgSeq,omitempty"`
	UnreadMsgNum    int64  `json:"UnreadMsgNum,omitempty"`
	LastSendMsgTime int64  `json:"LastSendMsgTime,omitempty"`
	ShutUpUntil     int64  `json:"ShutUpUntil,omitempty"`
	NameCard        string `json:"NameCard,omitempty"`
	MemberAccount   string `json:"Member_Account,omitempty"`
}

// JoinedGroup is one group of get_joined_group_list; fields beyond GroupID
// come back only when ResponseFilter asks for them.
type JoinedGroup struct {
	GroupID      string    `json:"GroupId"`
	Type         string    `json:"Type,omitempty"`
	Name         string    `json:"Name,omitempty"`
	OwnerAccount string    `json:"Owner_Account,omitempty"`
	CreateTime   int64     `json:"CreateTime,omitempty"`
	LastMsgTime  int64     `json:"LastMsgTime,omitempty"`
	NextMsgSeq   int64     `json:"NextMsgSeq,omitempty"`
	MemberNum    int       `json:"MemberNum,omitempty"`
	SelfInfo     *SelfInfo `json:"SelfInfo,omitempty"`
}

// GetJoinedGroupListResponse is the answer of get_joined_group_list.
// TotalCount counts all the account's groups, regardless of Limit/Offset.
type GetJoinedGroupListResponse struct {
	Response
	TotalCount  int           `json:"TotalCount"`
	GroupIDList []JoinedGroup `json:"GroupIdList"`
}

// GetJoinedGroupList calls get_joined_group_list.
func (c *Client) GetJoinedGroupList(ctx context.Context, req GetJoinedGroupListRequest) (*GetJoinedGroupListResponse, error) {
	switch {
	case req.MemberAccount == "":
		return nil, invalid(GetJoinedGroupList, "Member_Account is empty")
	case req.Limit < 0 || req.Limit > MaxJoinedGroupsPage:
		return nil, invalid(GetJoinedGroupList, "Limit %d, want 0 to %d", req.Limit, MaxJoinedGroupsPage)
	case req.Offset < 0:
		return nil, invalid(GetJoinedGroupList, "Offset %d is negative", req.Offset)
	}
	var resp GetJoinedGroupListResponse
	if err := c.call(ctx, GetJoinedGroupList, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// MaxGroupInfoIDs is the most group IDs get_group_info takes per call.
const MaxGroupInfoIDs = 50

// GetGroupInfoRequest asks for the details of 1 to 50 groups.
type GetGroupInfoRequest struct {
	GroupIDList    []string        `json:"GroupIdList"`
	ResponseFilter *ResponseFilter `json:"ResponseFilter,omitempty"`
}

// GroupInfo is one group of get_group_info. Check ErrorCode: a missing
// group comes back with 10010 or 10015 and no details.
type GroupInfo struct {
	GroupID         string `json:"GroupId"`
	ErrorCode       int    `json:"ErrorCode"`
	ErrorInfo       string `json:"ErrorInfo,omitempty"`
	Type            string `json:"Type,omitempty"`
	Name            string `json:"Name,omitempty"`
	OwnerAccount    string `json:"Owner_Account,omitempty"`
	CreateTime      int64  `json:"CreateTime,omitempty"`
	LastInfoTime    int64  `json:"LastInfoTime,omitempty"`
	LastMsgTime     int64  `json:"LastMsgTime,omitempty"`
	NextMsgSeq      int64  `json:"NextMsgSeq,omitempty"`
	MemberNum       int    `json:"MemberNum,omitempty"`
	MaxMemberNum    int    `json:"MaxMemberNum,omitempty"`
	ApplyJoinOption string `json:"ApplyJoinOption,omitempty"`
	SupportTopic    int    `json:"SupportTopic,omitempty"`
}

// GetGroupInfoResponse is the answer of get_group_info.
type GetGroupInfoResponse struct {
	Response
	GroupInfo []GroupInfo `json:"GroupInfo"`
}

// GetGroupInfo calls get_group_info. The top-level ErrorCode of this API is
// documented as meaningless when groups come back, so it is an error only
// when GroupInfo is empty; otherwise check each GroupInfo's ErrorCode.
func (c *Client) GetGroupInfo(ctx context.Context, req GetGroupInfoRequest) (*GetGroupInfoResponse, error) {
	if n := len(req.GroupIDList); n < 1 || n > MaxGroupInfoIDs {
		return nil, invalid(GetGroupInfo, "GroupIdList has %d IDs, want 1 to %d", n, MaxGroupInfoIDs)
	}
	var resp GetGroupInfoResponse
	opts := callOpts{itemized: func() bool { return len(resp.GroupInfo) > 0 }}
	if err := c.call(ctx, GetGroupInfo, req, &resp, opts); err != nil {
		return nil, err
	}
	return &resp, nil
}

// GetTopicRequest lists the topics of a community with topics enabled: all
// of them, or those in TopicIDList.
type GetTopicRequest struct {
	GroupID        string               `json:"GroupId"`
	FromAccount    string               `json:"From_Account,omitempty"`
	TopicIDList    []string             `json:"TopicIdList,omitempty"`
	ResponseFilter *TopicResponseFilter `json:"ResponseFilter,omitempty"`
}

// TopicResponseFilter selects the fields get_topic returns.
type TopicResponseFilter struct {
	TopicInfoFilter []string `json:"TopicInfoFilter,omitempty"`
	SelfInfoFilter  []string `json:"SelfInfoFilter,omitempty"`
}

// TopicInfo describes one topic.
type TopicInfo struct {
	TopicID       string `json:"TopicId"`
	TopicName     string `json:"TopicName,omitempty"`
	GroupID       string `json:"GroupID,omitempty"` // Tencent spells it GroupID here
	Introduction  string `json:"Introduction,omitempty"`
	Notification  string `json:"Notification,omitempty"`
	FaceURL       string `json:"FaceUrl,omitempty"`
	CustomString  string `json:"CustomString,omitempty"`
	CreateTime    int64  `json:"CreateTime,omitempty"`
	LastMsgTime   int64  `json:"LastMsgTime,omitempty"`
	NextMsgSeq    int64  `json:"NextMsgSeq,omitempty"`
	ShutUpAllFlag int    `json:"ShutUpAllFlag,omitempty"`
}

// TopicAndSelfInfo is one topic of get_topic; check ErrorCode.
type TopicAndSelfInfo struct {
	ErrorCode int       `json:"ErrorCode"`
	ErrorInfo string    `json:"ErrorInfo,omitempty"`
	TopicInfo TopicInfo `json:"TopicInfo"`
	SelfInfo  *SelfInfo `json:"SelfInfo,omitempty"`
}

// GetTopicResponse is the answer of get_topic.
type GetTopicResponse struct {
	Response
	TopicAndSelfInfo []TopicAndSelfInfo `json:"TopicAndSelfInfo"`
}

// GetTopic calls get_topic. From_Account is required by Tencent (it names
// whose SelfInfo comes back); left empty, the client's admin identifier is
// sent, which lists every topic.
func (c *Client) GetTopic(ctx context.Context, req GetTopicRequest) (*GetTopicResponse, error) {
	if req.GroupID == "" {
		return nil, invalid(GetTopic, "GroupId is empty")
	}
	if req.FromAccount == "" {
		req.FromAccount = c.admin
	}
	var resp GetTopicResponse
	if err := c.call(ctx, GetTopic, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}
