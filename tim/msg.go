package tim

import "encoding/json"

// MsgBodyElem is one element of a message body, such as
// {"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}.
type MsgBodyElem struct {
	MsgType    string          `json:"MsgType"`
	MsgContent json.RawMessage `json:"MsgContent"`
}

// TextBody returns a message body of one text element.
func TextBody(text string) []MsgBodyElem {
	content, _ := json.Marshal(struct {
		Text string `json:"Text"`
	}{text}) // a struct of one string always marshals
	return []MsgBodyElem{{MsgType: "TIMTextElem", MsgContent: content}}
}

// ResponseFilter selects the group fields returned by get_joined_group_list
// and get_group_info.
type ResponseFilter struct {
	GroupBaseInfoFilter []string `json:"GroupBaseInfoFilter,omitempty"` // e.g. "Type", "Name", "NextMsgSeq", "LastMsgTime"
	MemberInfoFilter    []string `json:"MemberInfoFilter,omitempty"`    // get_group_info only
	SelfInfoFilter      []string `json:"SelfInfoFilter,omitempty"`      // get_joined_group_list only, e.g. "Role", "MsgSeq"
}

// Group types, as Tencent spells them.
const (
	GroupTypePrivate    = "Private" // = Work
	GroupTypePublic     = "Public"
	GroupTypeChatRoom   = "ChatRoom" // = Meeting
	GroupTypeAVChatRoom = "AVChatRoom"
	GroupTypeCommunity  = "Community"
)
