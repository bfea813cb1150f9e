package tim

import "context"

// AdminMsgWithdrawRequest recalls one one-to-one message by its MsgKey.
type AdminMsgWithdrawRequest struct {
	FromAccount string `json:"From_Account"`
	ToAccount   string `json:"To_Account"`
	MsgKey      string `json:"MsgKey"`
}

// AdminMsgWithdraw calls admin_msgwithdraw. Already-recalled messages fail
// with code 20023, which Classify calls ClassDone.
func (c *Client) AdminMsgWithdraw(ctx context.Context, req AdminMsgWithdrawRequest) (*Response, error) {
	switch {
	case req.FromAccount == "":
		return nil, invalid(AdminMsgWithdraw, "From_Account is empty")
	case req.ToAccount == "":
		return nil, invalid(AdminMsgWithdraw, "To_Account is empty")
	case req.MsgKey == "":
		return nil, invalid(AdminMsgWithdraw, "MsgKey is empty")
	}
	var resp Response
	if err := c.call(ctx, AdminMsgWithdraw, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}

// AdminGetRoamMsgRequest queries the one-to-one messages between two
// accounts, seen from Operator_Account's side, sent in [MinTime, MaxTime]
// (Unix seconds), newest first. To continue after an incomplete answer set
// MaxTime to its LastMsgTime and LastMsgKey to its LastMsgKey.
type AdminGetRoamMsgRequest struct {
	OperatorAccount string `json:"Operator_Account"`
	PeerAccount     string `json:"Peer_Account"`
	MaxCnt          int    `json:"MaxCnt"`
	MinTime         int64  `json:"MinTime"`
	MaxTime         int64  `json:"MaxTime"`
	LastMsgKey      string `json:"LastMsgKey,omitempty"`
}

// MsgFlagBits values of a one-to-one message.
const (
	MsgFlagNormal   = 0
	MsgFlagRecalled = 8
)

// C2CMsg is one message of admin_getroammsg.
type C2CMsg struct {
	FromAccount     string        `json:"From_Account"`
	ToAccount       string        `json:"To_Account"`
	MsgSeq          int64         `json:"MsgSeq"`
	MsgRandom       int64         `json:"MsgRandom"`
	MsgTimeStamp    int64         `json:"MsgTimeStamp"`
	MsgClientTime   int64         `json:"MsgClientTime,omitempty"`
	MsgFlagBits     int           `json:"MsgFlagBits"`
	IsPeerRead      int           `json:"IsPeerRead,omitempty"`
	MsgKey          string        `json:"MsgKey"`
	MsgID           string        `json:"MsgId,omitempty"`
	MsgBody         []MsgBodyElem `json:"MsgBody"`
	CloudCustomData string        `json:"CloudCustomData,omitempty"`
}

// Recalled reports whether the message was recalled.
func (m C2CMsg) Recalled() bool { return m.MsgFlagBits&MsgFlagRecalled != 0 }

// AdminGetRoamMsgResponse is the answer of admin_getroammsg. Complete 0
// means more messages remain; LastMsgKey arrives as a string or a number.
type AdminGetRoamMsgResponse struct {
	Response
	Complete    int        `json:"Complete"`
	MsgCnt      int        `json:"MsgCnt"`
	LastMsgTime int64      `json:"LastMsgTime"`
	LastMsgKey  FlexString `json:"LastMsgKey"`
	MsgList     []C2CMsg   `json:"MsgList"`
}

// AdminGetRoamMsg calls admin_getroammsg.
func (c *Client) AdminGetRoamMsg(ctx context.Context, req AdminGetRoamMsgRequest) (*AdminGetRoamMsgResponse, error) {
	switch {
	case req.OperatorAccount == "":
		return nil, invalid(AdminGetRoamMsg, "Operator_Account is empty")
	case req.PeerAccount == "":
		return nil, invalid(AdminGetRoamMsg, "Peer_Account is empty")
	case req.MaxCnt <= 0:
		return nil, invalid(AdminGetRoamMsg, "MaxCnt %d is not positive", req.MaxCnt)
	case req.MinTime < 0 || req.MaxTime < req.MinTime:
		return nil, invalid(AdminGetRoamMsg, "time range [%d, %d] is empty or negative", req.MinTime, req.MaxTime)
	}
	var resp AdminGetRoamMsgResponse
	if err := c.call(ctx, AdminGetRoamMsg, req, &resp, callOpts{}); err != nil {
		return nil, err
	}
	return &resp, nil
}
