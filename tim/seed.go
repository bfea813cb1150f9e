package tim

import (
	"context"
	"math/rand/v2"
)

// AccountImportRequest imports one account.
type AccountImportRequest struct {
	UserID  string `json:"UserID"`
	Nick    string `json:"Nick,omitempty"`
	FaceURL string `json:"FaceUrl,omitempty"`
}

// AccountImport calls account_import.
func (c *Client) AccountImport(ctx context.Context, req AccountImportRequest) (*Response, error) {
	if req.UserID == "" {
		return nil, invalid(AccountImport, "UserID is empty")
	}
	var resp Response
	if err := c.call(ctx, AccountImport, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// MaxMultiAccountImport is the most accounts multiaccount_import takes per call.
const MaxMultiAccountImport = 100

// MultiAccountImportRequest imports up to 100 accounts.
type MultiAccountImportRequest struct {
	Accounts []string `json:"Accounts"`
}

// MultiAccountImportResponse lists the accounts that failed to import.
type MultiAccountImportResponse struct {
	Response
	FailAccounts []string `json:"FailAccounts"`
}

// MultiAccountImport calls multiaccount_import.
func (c *Client) MultiAccountImport(ctx context.Context, req MultiAccountImportRequest) (*MultiAccountImportResponse, error) {
	if n := len(req.Accounts); n < 1 || n > MaxMultiAccountImport {
		return nil, invalid(MultiAccountImport, "Accounts has %d entries, want 1 to %d", n, MaxMultiAccountImport)
	}
	var resp MultiAccountImportResponse
	if err := c.call(ctx, MultiAccountImport, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Member is one member in create_group's or add_group_member's MemberList.
type Member struct {
	MemberAccount string `json:"Member_Account"`
	Role          string `json:"Role,omitempty"` // create_group only: "Admin" or empty
}

// CreateGroupRequest creates a group. GroupID is optional (the server picks
// one); SupportTopic 1 makes a Community with topics.
type CreateGroupRequest struct {
	OwnerAccount string   `json:"Owner_Account,omitempty"`
	Type         string   `json:"Type"`
	GroupID      string   `json:"GroupId,omitempty"`
	Name         string   `json:"Name"`
	SupportTopic int      `json:"SupportTopic,omitempty"`
	MemberList   []Member `json:"MemberList,omitempty"`
}

// CreateGroupResponse carries the new group's ID.
type CreateGroupResponse struct {
	Response
	GroupID string `json:"GroupId"`
}

// CreateGroup calls create_group.
func (c *Client) CreateGroup(ctx context.Context, req CreateGroupRequest) (*CreateGroupResponse, error) {
	switch {
	case req.Type == "":
		return nil, invalid(CreateGroup, "Type is empty")
	case req.Name == "":
		return nil, invalid(CreateGroup, "Name is empty")
	}
	var resp CreateGroupResponse
	if err := c.call(ctx, CreateGroup, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// AddGroupMemberRequest adds accounts to a group.
type AddGroupMemberRequest struct {
	GroupID    string   `json:"GroupId"`
	Silence    int      `json:"Silence,omitempty"` // 1: no join notification
	MemberList []Member `json:"MemberList"`
}

// MemberResult is the outcome for one added account: 0 failed, 1 added,
// 2 already a member, 3 waiting for approval.
type MemberResult struct {
	MemberAccount string `json:"Member_Account"`
	Result        int    `json:"Result"`
}

// AddGroupMemberResponse is the answer of add_group_member.
type AddGroupMemberResponse struct {
	Response
	MemberList []MemberResult `json:"MemberList"`
}

// AddGroupMember calls add_group_member.
func (c *Client) AddGroupMember(ctx context.Context, req AddGroupMemberRequest) (*AddGroupMemberResponse, error) {
	switch {
	case req.GroupID == "":
		return nil, invalid(AddGroupMember, "GroupId is empty")
	case len(req.MemberList) == 0:
		return nil, invalid(AddGroupMember, "MemberList is empty")
	}
	var resp AddGroupMemberResponse
	if err := c.call(ctx, AddGroupMember, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// DeleteGroupMemberRequest removes accounts from a group (a spammer kicked
// out while their messages are purged).
type DeleteGroupMemberRequest struct {
	GroupID            string   `json:"GroupId"`
	Silence            int      `json:"Silence,omitempty"` // 1: no notification
	MemberToDelAccount []string `json:"MemberToDel_Account"`
}

// DeleteGroupMember calls delete_group_member.
func (c *Client) DeleteGroupMember(ctx context.Context, req DeleteGroupMemberRequest) (*Response, error) {
	switch {
	case req.GroupID == "":
		return nil, invalid(DeleteGroupMember, "GroupId is empty")
	case len(req.MemberToDelAccount) == 0:
		return nil, invalid(DeleteGroupMember, "MemberToDel_Account is empty")
	}
	var resp Response
	if err := c.call(ctx, DeleteGroupMember, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// CreateTopicRequest creates a topic in a community with topics enabled.
type CreateTopicRequest struct {
	GroupID      string `json:"GroupId"`
	TopicID      string `json:"TopicId,omitempty"`
	TopicName    string `json:"TopicName"`
	FromAccount  string `json:"From_Account,omitempty"`
	CustomString string `json:"CustomString,omitempty"`
}

// CreateTopicResponse carries the new topic's ID.
type CreateTopicResponse struct {
	Response
	TopicID string `json:"TopicId"`
}

// CreateTopic calls create_topic.
func (c *Client) CreateTopic(ctx context.Context, req CreateTopicRequest) (*CreateTopicResponse, error) {
	switch {
	case req.GroupID == "":
		return nil, invalid(CreateTopic, "GroupId is empty")
	case req.TopicName == "":
		return nil, invalid(CreateTopic, "TopicName is empty")
	}
	var resp CreateTopicResponse
	if err := c.call(ctx, CreateTopic, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SendGroupMsgRequest sends a message to a group or topic. The server
// deduplicates Random over five minutes; SendGroupMsg fills a zero Random.
type SendGroupMsgRequest struct {
	GroupID               string        `json:"GroupId"`
	TopicID               string        `json:"TopicId,omitempty"`
	Random                uint32        `json:"Random"`
	FromAccount           string        `json:"From_Account,omitempty"`
	MsgPriority           string        `json:"MsgPriority,omitempty"`
	MsgBody               []MsgBodyElem `json:"MsgBody"`
	OnlineOnlyFlag        int           `json:"OnlineOnlyFlag,omitempty"`
	ForbidCallbackControl []string      `json:"ForbidCallbackControl,omitempty"`
	CloudCustomData       string        `json:"CloudCustomData,omitempty"`
}

// SendGroupMsgResponse carries the message's seq, the key group_msg_recall
// uses.
type SendGroupMsgResponse struct {
	Response
	MsgTime       int64  `json:"MsgTime"`
	MsgSeq        int64  `json:"MsgSeq"`
	MsgDropReason string `json:"MsgDropReason,omitempty"`
}

// SendGroupMsg calls send_group_msg.
func (c *Client) SendGroupMsg(ctx context.Context, req SendGroupMsgRequest) (*SendGroupMsgResponse, error) {
	switch {
	case req.GroupID == "":
		return nil, invalid(SendGroupMsg, "GroupId is empty")
	case len(req.MsgBody) == 0:
		return nil, invalid(SendGroupMsg, "MsgBody is empty")
	}
	if req.Random == 0 {
		req.Random = rand.Uint32()
	}
	var resp SendGroupMsgResponse
	if err := c.call(ctx, SendGroupMsg, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SyncOtherMachine values of sendmsg.
const (
	SyncToSender   = 1 // also sync the message to the sender's devices
	NoSyncToSender = 2
)

// SendMsgRequest sends a one-to-one message. SendMsg fills a zero
// MsgRandom and a zero SyncOtherMachine (with SyncToSender).
type SendMsgRequest struct {
	SyncOtherMachine      int           `json:"SyncOtherMachine,omitempty"`
	FromAccount           string        `json:"From_Account,omitempty"`
	ToAccount             string        `json:"To_Account"`
	MsgLifeTime           int           `json:"MsgLifeTime,omitempty"`
	MsgRandom             uint32        `json:"MsgRandom"`
	MsgBody               []MsgBodyElem `json:"MsgBody"`
	ForbidCallbackControl []string      `json:"ForbidCallbackControl,omitempty"`
	CloudCustomData       string        `json:"CloudCustomData,omitempty"`
}

// SendMsgResponse carries the message's MsgKey, the key admin_msgwithdraw
// uses.
type SendMsgResponse struct {
	Response
	MsgTime int64  `json:"MsgTime"`
	MsgKey  string `json:"MsgKey"`
	MsgID   string `json:"MsgId,omitempty"`
}

// SendMsg calls sendmsg.
func (c *Client) SendMsg(ctx context.Context, req SendMsgRequest) (*SendMsgResponse, error) {
	switch {
	case req.ToAccount == "":
		return nil, invalid(SendMsg, "To_Account is empty")
	case len(req.MsgBody) == 0:
		return nil, invalid(SendMsg, "MsgBody is empty")
	}
	if req.MsgRandom == 0 {
		req.MsgRandom = rand.Uint32()
	}
	if req.SyncOtherMachine == 0 {
		req.SyncOtherMachine = SyncToSender
	}
	var resp SendMsgResponse
	if err := c.call(ctx, SendMsg, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// DeleteC2CMsgRambleRequest deletes up to 30 one-to-one messages from
// Operator_Account's side of the conversation only: the peer still sees
// them.
type DeleteC2CMsgRambleRequest struct {
	OperatorAccount string   `json:"Operator_Account"`
	PeerAccount     string   `json:"Peer_Account"`
	MsgKeyList      []string `json:"MsgKeyList"`
}

// DeleteC2CMsgRambleResponse lists the keys that named no message.
type DeleteC2CMsgRambleResponse struct {
	Response
	InvalidMsgKeyList []string `json:"InvalidMsgKeyList"`
}

// DeleteC2CMsgRamble calls delete_c2c_msg_ramble.
func (c *Client) DeleteC2CMsgRamble(ctx context.Context, req DeleteC2CMsgRambleRequest) (*DeleteC2CMsgRambleResponse, error) {
	switch {
	case req.OperatorAccount == "" || req.PeerAccount == "":
		return nil, invalid(DeleteC2CMsgRamble, "Operator_Account and Peer_Account are required")
	case len(req.MsgKeyList) == 0 || len(req.MsgKeyList) > 30:
		return nil, invalid(DeleteC2CMsgRamble, "MsgKeyList: want 1 to 30 keys, got %d", len(req.MsgKeyList))
	}
	var resp DeleteC2CMsgRambleResponse
	if err := c.call(ctx, DeleteC2CMsgRamble, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}
