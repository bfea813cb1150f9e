package producer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// scheduleFields are the flags of each schedulable command that say what
// the job is; every other flag a command line sets is refused.
var scheduleFields = map[string][]string{
	"recall group": {"group", "topic", "seqs"},
	"recall c2c":   {"from", "to", "msgkey"},
	"recall file":  {},
	"purge user":   {"user", "peers", "source", "since", "until"},
	"purge group":  {"group", "topic", "sender", "seq-from", "seq-to", "since", "until"},
}

// scheduleHarmless are flags a schedule's command line may carry that change
// nothing about the job (a firing is always confirmed and never waits).
var scheduleHarmless = map[string]bool{"queue": true, "reason": true, "yes": true, "json": true, "confirm-above": true, "discovery-concurrency": true}

// maxScheduledMessages bounds the messages a schedule holds.
const maxScheduledMessages = 10_000

// ScheduledRequest turns the parsed flags of a recall or purge command
// (path: "recall group", "purge user", ...) into the typed job request a
// schedule holds. Connection flags are refused, naming the flag. readFiles
// lets "recall file PATH" read the list now (on the machine adding the
// schedule); a migration of a stored command line never reads a file.
func ScheduledRequest(ctx context.Context, path string, fl *pflag.FlagSet, readFiles bool) (JobRequest, error) {
	var req JobRequest
	fields, ok := scheduleFields[path]
	if !ok {
		return req, fmt.Errorf("imrecall %s: cannot be scheduled", path)
	}
	allowed := map[string]bool{}
	for _, f := range fields {
		allowed[f] = true
	}
	var refused error
	fl.Visit(func(f *pflag.Flag) {
		switch {
		case refused != nil || allowed[f.Name] || scheduleHarmless[f.Name]:
		case IsConnectionSetting(f.Name):
			refused = NewConnectionSettingError("--" + f.Name)
		case f.Name == "dry-run":
			refused = errors.New("--dry-run: a scheduled dry run would do nothing")
		default:
			refused = fmt.Errorf("--%s: not part of a scheduled job (a schedule holds what the job is: %s)", f.Name, strings.Join(fields, ", "))
		}
	})
	if refused != nil {
		return req, refused
	}
	str := func(n string) string { v, _ := fl.GetString(n); return v }
	list := func(n string) []string {
		if v, err := fl.GetStringArray(n); err == nil {
			return v
		}
		return splitList(str(n))
	}
	i64 := func(n string) int64 { v, _ := fl.GetInt64(n); return v }
	req.Reason = str("reason")
	if fl.Changed("queue") {
		req.Queue = str("queue")
	}
	positional := fl.Args()
	if path != "recall file" && len(positional) > 0 {
		return req, fmt.Errorf("imrecall %s: unexpected argument %q", path, positional[0])
	}
	switch path {
	case "recall group":
		req.Kind = KindRecall
		seqs := splitList(str("seqs"))
		if len(seqs) == 0 {
			return req, errors.New("--seqs: required")
		}
		for _, s := range seqs {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return req, fmt.Errorf("--seqs: %q is not a positive MsgSeq", s)
			}
			req.Messages = append(req.Messages, MessageRef{GroupID: str("group"), TopicID: str("topic"), MsgSeq: n})
		}
	case "recall c2c":
		req.Kind = KindRecall
		req.Messages = []MessageRef{{From: str("from"), To: str("to"), MsgKey: str("msgkey")}}
	case "recall file":
		req.Kind = KindRecall
		if len(positional) != 1 {
			return req, fmt.Errorf("recall file: want one PATH")
		}
		if !readFiles {
			return req, fmt.Errorf("recall file %s: a stored schedule cannot read a file (it would be read on a worker); add it again with \"schedule add\", which reads the list once", positional[0])
		}
		fh, err := os.Open(positional[0])
		if err != nil {
			return req, fmt.Errorf("%v", err)
		}
		defer fh.Close()
		err = ReadList(ctx, fh, positional[0], func(_ int, m Message) error {
			if len(req.Messages) >= maxScheduledMessages {
				return fmt.Errorf("more than %d messages: a schedule holds at most that many", maxScheduledMessages)
			}
			req.Messages = append(req.Messages, MessageRef{GroupID: m.GroupID, TopicID: m.TopicID, MsgSeq: m.MsgSeq, From: m.From, To: m.To, MsgKey: m.MsgKey})
			return nil
		})
		if err != nil {
			return req, fmt.Errorf("%v", err)
		}
	case "purge user":
		req.Kind, req.User, req.Peers = KindPurgeUser, str("user"), splitList(str("peers"))
		if fl.Changed("source") {
			req.Source = str("source")
		}
		req.Since, req.Until = str("since"), str("until")
	case "purge group":
		req.Kind, req.Groups, req.Topic, req.Senders = KindPurgeGroup, list("group"), str("topic"), list("sender")
		req.SeqFrom, req.SeqTo, req.Since, req.Until = i64("seq-from"), i64("seq-to"), str("since"), str("until")
	}
	return req, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
