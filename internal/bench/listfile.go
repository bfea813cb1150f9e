package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/imrecall/imrecall/emulator"
)

// writeSpamList writes the spammer's messages as JSON Lines in time order,
// as a callback log would hold them: group messages (GroupId, TopicId,
// MsgSeq) and one-to-one messages to the peers, interleaved.
func writeSpamList(path string, emu *emulator.Server, spammer string, peers []string) error {
	type line struct {
		time int64
		json any
	}
	var lines []line
	for _, g := range emu.Groups() {
		if g.Type == "AVChatRoom" {
			continue
		}
		for _, topic := range append([]string{""}, g.Topics...) {
			for _, m := range emu.GroupMessages(g.GroupID, topic) {
				if m.From == spammer {
					lines = append(lines, line{m.Time, listGroupLine{GroupID: g.GroupID, TopicID: topic, MsgSeq: m.Seq}})
				}
			}
		}
	}
	for _, p := range peers {
		for _, m := range emu.C2CMessages(spammer, p) {
			if m.From == spammer {
				lines = append(lines, line{m.Time, listC2CLine{From: m.From, To: m.To, MsgKey: m.MsgKey}})
			}
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].time < lines[j].time })
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating the list file: %w", err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	for _, l := range lines {
		if err := enc.Encode(l.json); err != nil {
			f.Close()
			return fmt.Errorf("writing the list file: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("writing the list file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the list file: %w", err)
	}
	return nil
}

// listGroupLine and listC2CLine are lines of a list file (see recall file).
type listGroupLine struct {
	GroupID string `json:"GroupId"`
	TopicID string `json:"TopicId,omitempty"`
	MsgSeq  int64  `json:"MsgSeq"`
}

type listC2CLine struct {
	From   string `json:"From_Account"`
	To     string `json:"To_Account"`
	MsgKey string `json:"MsgKey"`
}
