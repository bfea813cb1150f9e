package tim

// API identifies one REST endpoint: the two path segments after /v4/.
// The zero value is not a valid API.
type API struct {
	Service string // e.g. "group_open_http_svc"
	Command string // e.g. "group_msg_recall"
}

// Name returns the command, the path's last segment. It is the key used by
// rate limiters (Gate) and in metrics and logs.
func (a API) Name() string { return a.Command }

// Path returns the URL path of the endpoint, "/v4/{service}/{command}".
func (a API) Path() string { return "/v4/" + a.Service + "/" + a.Command }

// String returns "service/command".
func (a API) String() string { return a.Service + "/" + a.Command }

// ReadOnly reports whether a only reads (the discovery APIs): asking again
// changes nothing, so the client asks again after a throttle code.
func (a API) ReadOnly() bool {
	switch a {
	case GroupMsgGetSimple, AdminGetRoamMsg, GetJoinedGroupList, GetGroupInfo, GetTopic:
		return true
	}
	return false
}

// DefaultRateLimit is Tencent's default cap, in calls per second, for each API
// of one app (SDKAppID). Higher limits are a paid add-on.
const DefaultRateLimit = 200

// The APIs the client calls.
var (
	// Recall.
	GroupMsgRecall   = API{Service: "group_open_http_svc", Command: "group_msg_recall"}
	AdminMsgWithdraw = API{Service: "openim", Command: "admin_msgwithdraw"}

	// Discovery.
	GroupMsgGetSimple  = API{Service: "group_open_http_svc", Command: "group_msg_get_simple"}
	AdminGetRoamMsg    = API{Service: "openim", Command: "admin_getroammsg"}
	GetJoinedGroupList = API{Service: "group_open_http_svc", Command: "get_joined_group_list"}
	GetGroupInfo       = API{Service: "group_open_http_svc", Command: "get_group_info"}
	GetTopic           = API{Service: "million_group_open_http_svc", Command: "get_topic"}

	// Seeding (demo and tests).
	AccountImport      = API{Service: "im_open_login_svc", Command: "account_import"}
	MultiAccountImport = API{Service: "im_open_login_svc", Command: "multiaccount_import"}
	CreateGroup        = API{Service: "group_open_http_svc", Command: "create_group"}
	DeleteGroupMember  = API{Service: "group_open_http_svc", Command: "delete_group_member"}
	AddGroupMember     = API{Service: "group_open_http_svc", Command: "add_group_member"}
	CreateTopic        = API{Service: "million_group_open_http_svc", Command: "create_topic"}
	SendGroupMsg       = API{Service: "group_open_http_svc", Command: "send_group_msg"}
	SendMsg            = API{Service: "openim", Command: "sendmsg"}
	// DeleteC2CMsgRamble deletes one-to-one messages from one side only
	// (tests model a sender who cleared their side with it).
	DeleteC2CMsgRamble = API{Service: "openim", Command: "delete_c2c_msg_ramble"}
)

// AllAPIs lists every API the client calls, recall APIs first. Callers must
// not modify it.
var AllAPIs = []API{
	GroupMsgRecall, AdminMsgWithdraw,
	GroupMsgGetSimple, AdminGetRoamMsg, GetJoinedGroupList, GetGroupInfo, GetTopic,
	AccountImport, MultiAccountImport, CreateGroup, AddGroupMember, CreateTopic, SendGroupMsg, SendMsg, DeleteC2CMsgRamble,
}
