package emulator

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// DatasetSpec describes synthetic data. Zero fields take the defaults noted.
type DatasetSpec struct {
	Groups        int     // groups of mixed types; default 100
	Users         int     // ordinary users; default 1000
	GroupMessages int     // messages over all groups (AVChatRoom keeps none); default 10,000
	C2CMessages   int     // one-to-one messages; default 1,000
	HeavySenders  int     // users who post a lot; default 1
	HeavyGroups   int     // groups each heavy sender belongs to; default Groups/2
	HeavyShare    float64 // share of a heavy group's messages sent by its heavy senders; default 0.1
	Peers         int     // one-to-one peers of each heavy sender; default 20
	Topics        int     // topics of each Community group; default 3
	// TypeMix weighs the group types (Public, Private, ChatRoom,
	// AVChatRoom, Community); default {Public: 4, Private: 3, ChatRoom: 2,
	// AVChatRoom: 1, Community: 1}. With 5 groups or more there is always at
	// least one Community with topics and one AVChatRoom.
	TypeMix map[string]int
	// Start and End bound the messages' times; default the last 7 days.
	Start, End time.Time
	Seed       int64
}

// Dataset says what Generate made.
type Dataset struct {
	Groups        []GroupInfo         `json:"-"`
	GroupsByType  map[string]int      `json:"groups_by_type"`
	Users         int                 `json:"users"`
	HeavySenders  []string            `json:"heavy_senders"`
	PeersOf       map[string][]string `json:"-"`
	GroupMessages int                 `json:"group_messages"`
	C2CMessages   int                 `json:"c2c_messages"`
	HeavyMessages int                 `json:"heavy_messages"` // group and one-to-one messages sent by heavy senders
	Took          time.Duration       `json:"-"`
	TookSeconds   float64             `json:"took_seconds"`
}

var typeOrder = []string{"Public", "Private", "ChatRoom", "AVChatRoom", "Community"}

// Generate adds synthetic users, groups and messages, deterministic for a
// seed. It writes directly into memory: a million messages load in seconds.
func (s *Server) Generate(spec DatasetSpec) (*Dataset, error) {
	begin := time.Now()
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&spec.Groups, 100)
	def(&spec.Users, 1000)
	def(&spec.GroupMessages, 10000)
	def(&spec.C2CMessages, 1000)
	def(&spec.HeavySenders, 1)
	def(&spec.HeavyGroups, spec.Groups/2)
	def(&spec.Peers, 20)
	def(&spec.Topics, 3)
	if spec.HeavyShare == 0 {
		spec.HeavyShare = 0.1
	}
	if spec.TypeMix == nil {
		spec.TypeMix = map[string]int{"Public": 4, "Private": 3, "ChatRoom": 2, "AVChatRoom": 1, "Community": 1}
	}
	if spec.End.IsZero() {
		spec.End = time.Now()
	}
	if spec.Start.IsZero() {
		spec.Start = spec.End.Add(-7 * 24 * time.Hour)
	}
	switch {
	case spec.Groups < 0 || spec.Users < 2 || spec.GroupMessages < 0 || spec.C2CMessages < 0 || spec.HeavySenders < 0 || spec.Peers < 0 || spec.Topics < 0:
		return nil, fmt.Errorf("emulator: DatasetSpec %+v: counts must not be negative, and Users at least 2", spec)
	case spec.HeavyGroups > spec.Groups:
		return nil, fmt.Errorf("emulator: DatasetSpec.HeavyGroups %d is more than Groups %d", spec.HeavyGroups, spec.Groups)
	case spec.HeavyShare < 0 || spec.HeavyShare > 1:
		return nil, fmt.Errorf("emulator: DatasetSpec.HeavyShare %v: want 0 to 1", spec.HeavyShare)
	case spec.Peers > spec.Users:
		return nil, fmt.Errorf("emulator: DatasetSpec.Peers %d is more than Users %d", spec.Peers, spec.Users)
	case !spec.End.After(spec.Start):
		return nil, fmt.Errorf("emulator: DatasetSpec: End %v is not after Start %v", spec.End, spec.Start)
	}
	weights := 0
	for _, t := range typeOrder {
		if spec.TypeMix[t] < 0 {
			return nil, fmt.Errorf("emulator: DatasetSpec.TypeMix[%s] is negative", t)
		}
		weights += spec.TypeMix[t]
	}
	if weights == 0 {
		return nil, fmt.Errorf("emulator: DatasetSpec.TypeMix has no weight")
	}

	rng := rand.New(rand.NewPCG(uint64(spec.Seed), 0x9e3779b97f4a7c15))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groupSeq++
	batch := s.groupSeq
	ds := &Dataset{GroupsByType: map[string]int{}, PeersOf: map[string][]string{}, Users: spec.Users}

	users := make([]uint32, spec.Users)
	for i := range users {
		users[i] = s.addUser(fmt.Sprintf("user%d_%05d", batch, i))
	}
	heavy := make([]uint32, spec.HeavySenders)
	for i := range heavy {
		name := fmt.Sprintf("spammer%d_%02d", batch, i)
		heavy[i] = s.addUser(name)
		ds.HeavySenders = append(ds.HeavySenders, name)
	}

	// Group types: weighted, with a Community and an AVChatRoom guaranteed.
	types := make([]string, spec.Groups)
	for i := range types {
		n := rng.IntN(weights)
		for _, t := range typeOrder {
			if n < spec.TypeMix[t] {
				types[i] = t
				break
			}
			n -= spec.TypeMix[t]
		}
	}
	if spec.Groups >= 5 {
		types[0], types[1] = "Community", "AVChatRoom"
	}
	start, span := spec.Start.Unix(), spec.End.Unix()-spec.Start.Unix()
	groups := make([]*group, spec.Groups)
	isHeavy := make([]bool, spec.Groups)
	for _, i := range rng.Perm(spec.Groups)[:spec.HeavyGroups] {
		isHeavy[i] = true
	}
	for i := range groups {
		g := &group{id: fmt.Sprintf("@TGS#%d_%05d", batch, i), typ: types[i], name: fmt.Sprintf("group %d", i),
			created: start, members: map[uint32]int64{}, topics: map[string]*topic{}}
		g.owner = s.users[users[rng.IntN(len(users))]]
		n := 5 + rng.IntN(40)
		for range n {
			s.join(g, users[rng.IntN(len(users))], start)
		}
		if isHeavy[i] {
			for _, h := range heavy {
				s.join(g, h, start)
			}
		}
		if g.typ == "Community" {
			g.supportTopic = true
			for t := range spec.Topics {
				id := fmt.Sprintf("%s@TOPIC#_%d", g.id, t)
				g.topics[id] = &topic{id: id, name: fmt.Sprintf("topic %d", t), created: start}
				g.topicOrder = append(g.topicOrder, id)
			}
		}
		s.groups[g.id] = g
		s.groupOrder = append(s.groupOrder, g.id)
		groups[i] = g
		ds.GroupsByType[g.typ]++
	}

	// Group messages, spread over the groups that keep history, in time order.
	var hist []*[]gmsg
	var histGroup []*group
	for _, g := range groups {
		if g.typ == "AVChatRoom" {
			continue
		}
		hist = append(hist, &g.msgs)
		histGroup = append(histGroup, g)
		for _, id := range g.topicOrder {
			hist = append(hist, &g.topics[id].msgs)
			histGroup = append(histGroup, g)
		}
	}
	if len(hist) > 0 && spec.GroupMessages > 0 {
		per := spec.GroupMessages / len(hist)
		extra := spec.GroupMessages % len(hist)
		for hi, h := range hist {
			g := histGroup[hi]
			n := per
			if hi < extra {
				n++
			}
			*h = make([]gmsg, n)
			heavyHere := isHeavyGroup(g, heavy)
			for k := range n {
				m := gmsg{time: start + span*int64(k)/int64(max(n, 1)), random: rng.Uint32()}
				if heavyHere && rng.Float64() < spec.HeavyShare {
					m.from = heavy[rng.IntN(len(heavy))]
					ds.HeavyMessages++
				} else {
					m.from = g.memberOrder[rng.IntN(len(g.memberOrder))]
				}
				(*h)[k] = m
			}
			ds.GroupMessages += n
		}
	}

	// One-to-one: half among each heavy sender and its peers, the rest at random.
	type pairT struct{ a, b uint32 }
	var pairs []pairT
	for i, h := range heavy {
		for _, p := range rng.Perm(len(users))[:spec.Peers] {
			pairs = append(pairs, pairT{h, users[p]})
			ds.PeersOf[ds.HeavySenders[i]] = append(ds.PeersOf[ds.HeavySenders[i]], s.users[users[p]])
		}
	}
	heavyPairs := len(pairs)
	for range max(10, spec.C2CMessages/20) {
		a, b := users[rng.IntN(len(users))], users[rng.IntN(len(users))]
		if a != b {
			pairs = append(pairs, pairT{a, b})
		}
	}
	for k := range spec.C2CMessages {
		var p pairT
		if heavyPairs > 0 && k%2 == 0 {
			p = pairs[rng.IntN(heavyPairs)]
		} else {
			p = pairs[heavyPairs+rng.IntN(len(pairs)-heavyPairs)]
		}
		from, to := p.a, p.b
		if rng.IntN(10) >= 6 {
			from, to = to, from
		}
		key := pair(from, to)
		c := s.convs[key]
		if c == nil {
			c = &conv{}
			s.convs[key] = c
		}
		c.msgs = append(c.msgs, cmsg{from: from, to: to, random: rng.Uint32()})
		if k%2 == 0 && heavyPairs > 0 && from == p.a {
			ds.HeavyMessages++
		}
		ds.C2CMessages++
	}
	// Times increase along each conversation.
	for _, c := range s.convs {
		n := int64(len(c.msgs))
		for i := range c.msgs {
			if c.msgs[i].time == 0 {
				c.msgs[i].time = start + span*int64(i)/max(n, 1)
			}
		}
	}
	for _, g := range groups {
		ds.Groups = append(ds.Groups, GroupInfo{GroupID: g.id, Type: g.typ, Topics: append([]string(nil), g.topicOrder...)})
	}
	ds.Took = time.Since(begin)
	ds.TookSeconds = ds.Took.Seconds()
	return ds, nil
}

func isHeavyGroup(g *group, heavy []uint32) bool {
	for _, h := range heavy {
		if _, ok := g.members[h]; ok {
			return true
		}
	}
	return false
}
