package emulator

import (
	"fmt"
	"strconv"
	"strings"
)

// gmsg is one group message; its seq is its index + 1.
type gmsg struct {
	time     int64  // MsgTimeStamp, unix seconds
	from     uint32 // user index
	random   uint32
	recalled bool
	requests uint16 // recall requests that came after it was recalled
	lost     uint16 // recall calls that reached it, answered 502 in their place
}

// cmsg is one one-to-one message of a conversation; its MsgSeq is index + 1.
type cmsg struct {
	from     uint32
	to       uint32
	time     int64
	random   uint32
	recalled bool
	requests uint16
	lost     uint16
	// deletedFor marks a one-sided delete (delete_c2c_msg_ramble): the
	// sender's side (1), the receiver's (2). The other side still sees it.
	deletedFor uint8
}

// One-sided deletes of a one-to-one message.
const (
	deletedForSender   = 1
	deletedForReceiver = 2
)

// visibleTo reports whether user u's side of the conversation shows m.
func (m cmsg) visibleTo(u uint32) bool {
	if u == m.from {
		return m.deletedFor&deletedForSender == 0
	}
	return m.deletedFor&deletedForReceiver == 0
}

func (m cmsg) key(seq int) string {
	return strconv.Itoa(seq) + "_" + strconv.FormatUint(uint64(m.random), 10) + "_" + strconv.FormatInt(m.time, 10)
}

type topic struct {
	id, name string
	created  int64
	msgs     []gmsg
}

type group struct {
	id, typ, name string
	owner         string
	created       int64
	supportTopic  bool
	members       map[uint32]int64 // user → join time
	memberOrder   []uint32
	topics        map[string]*topic
	topicOrder    []string
	msgs          []gmsg
	nextSeqAV     int64 // AVChatRoom keeps no history, only a seq counter
}

func (g *group) history(topicID string) (*[]gmsg, bool) {
	if topicID == "" {
		return &g.msgs, true
	}
	t, ok := g.topics[topicID]
	if !ok {
		return nil, false
	}
	return &t.msgs, true
}

func (g *group) addMember(u uint32, at int64) bool {
	if _, ok := g.members[u]; ok {
		return false
	}
	g.members[u] = at
	g.memberOrder = append(g.memberOrder, u)
	return true
}

// conv is a one-to-one conversation of two users.
type conv struct {
	msgs []cmsg
}

type convKey struct{ a, b uint32 } // a < b

func pair(x, y uint32) convKey {
	if x > y {
		x, y = y, x
	}
	return convKey{x, y}
}

// groupTypes maps every accepted type name to its canonical name.
var groupTypes = map[string]string{
	"Public": "Public", "Private": "Private", "Work": "Private",
	"ChatRoom": "ChatRoom", "Meeting": "ChatRoom", "AVChatRoom": "AVChatRoom", "Community": "Community",
}

// parseMsgKey splits {MsgSeq}_{MsgRandom}_{MsgTimeStamp}.
func parseMsgKey(k string) (seq int, random uint32, ts int64, ok bool) {
	parts := strings.Split(k, "_")
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	s, err1 := strconv.Atoi(parts[0])
	r, err2 := strconv.ParseUint(parts[1], 10, 32)
	t, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || s < 0 {
		return 0, 0, 0, false
	}
	return s, uint32(r), t, true
}

// GroupMessage is a group message as the ground truth knows it.
type GroupMessage struct {
	Seq            int64
	From           string
	Time           int64
	Recalled       bool
	RecallRequests int // recall requests that targeted it after it was recalled
	// AnswersLost counts the recall calls that reached it (recalled it, or
	// found it recalled) whose answer was replaced by an HTTP 502
	// (Faults.HTTP502AfterEffect): each may be followed by one more request.
	AnswersLost int
}

// C2CMessage is a one-to-one message as the ground truth knows it.
type C2CMessage struct {
	MsgKey         string
	From, To       string
	Time           int64
	Recalled       bool
	RecallRequests int
	AnswersLost    int // as GroupMessage.AnswersLost
}

// GroupInfo describes a group for tests.
type GroupInfo struct {
	GroupID string
	Type    string
	Topics  []string
	Members []string
}

// GroupMessages returns a copy of the history of a group (topicID "") or of
// one of its topics; nil if there is none.
func (s *Server) GroupMessages(groupID, topicID string) []GroupMessage {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, ok := s.groups[groupID]
	if !ok {
		return nil
	}
	h, ok := g.history(topicID)
	if !ok {
		return nil
	}
	out := make([]GroupMessage, len(*h))
	for i, m := range *h {
		out[i] = GroupMessage{Seq: int64(i + 1), From: s.users[m.from], Time: m.time, Recalled: m.recalled, RecallRequests: int(m.requests), AnswersLost: int(m.lost)}
	}
	return out
}

// C2CMessages returns a copy of the conversation of a and b, both ways.
func (s *Server) C2CMessages(a, b string) []C2CMessage {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ia, ok1 := s.userIdx[a]
	ib, ok2 := s.userIdx[b]
	if !ok1 || !ok2 {
		return nil
	}
	c := s.convs[pair(ia, ib)]
	if c == nil {
		return nil
	}
	out := make([]C2CMessage, len(c.msgs))
	for i, m := range c.msgs {
		out[i] = C2CMessage{MsgKey: m.key(i + 1), From: s.users[m.from], To: s.users[m.to], Time: m.time, Recalled: m.recalled, RecallRequests: int(m.requests), AnswersLost: int(m.lost)}
	}
	return out
}

// Groups lists every group, in creation order.
func (s *Server) Groups() []GroupInfo {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]GroupInfo, 0, len(s.groupOrder))
	for _, id := range s.groupOrder {
		g := s.groups[id]
		gi := GroupInfo{GroupID: g.id, Type: g.typ, Topics: append([]string(nil), g.topicOrder...)}
		for _, u := range g.memberOrder {
			gi.Members = append(gi.Members, s.users[u])
		}
		out = append(out, gi)
	}
	return out
}

// Truth is a summary of the ground truth.
type Truth struct {
	Users         int `json:"users"`
	Groups        int `json:"groups"`
	GroupMessages int `json:"group_messages"`
	GroupRecalled int `json:"group_recalled"`
	C2CMessages   int `json:"c2c_messages"`
	C2CRecalled   int `json:"c2c_recalled"`
	DoubleRecalls int `json:"double_recalls"` // recall requests that targeted an already-recalled message
}

// Truth summarises the ground truth.
func (s *Server) Truth() Truth {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t := Truth{Users: len(s.users), Groups: len(s.groups)}
	count := func(h []gmsg) {
		for _, m := range h {
			t.GroupMessages++
			if m.recalled {
				t.GroupRecalled++
			}
			t.DoubleRecalls += int(m.requests)
		}
	}
	for _, g := range s.groups {
		count(g.msgs)
		for _, tp := range g.topics {
			count(tp.msgs)
		}
	}
	for _, c := range s.convs {
		for _, m := range c.msgs {
			t.C2CMessages++
			if m.recalled {
				t.C2CRecalled++
			}
			t.DoubleRecalls += int(m.requests)
		}
	}
	return t
}

func (s *Server) newGroupID() string {
	s.groupSeq++
	return fmt.Sprintf("@TGS#%d%s", s.groupSeq, "EMU")
}
