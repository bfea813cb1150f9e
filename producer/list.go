package producer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/imrecall/imrecall/internal/csvsafe"
	"github.com/imrecall/imrecall/jobs"
	"github.com/imrecall/imrecall/tasks"
)

// Message is one message named by a list: a group message (GroupId, MsgSeq,
// optional TopicId) or a one-to-one message (From_Account, To_Account, MsgKey).
type Message struct {
	GroupID string
	TopicID string
	MsgSeq  int64
	From    string
	To      string
	MsgKey  string
}

// Target is the message's job target.
func (m Message) Target() jobs.Target {
	if m.GroupID != "" {
		return jobs.Target{GroupID: m.GroupID, TopicID: m.TopicID}
	}
	return jobs.Target{From: m.From, To: m.To}
}

// LineError is a problem with one line of a list file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// maxLine bounds one line of a list file.
const maxLine = 1 << 20

// ReadList streams the messages of a list file to fn, with their line
// numbers. The format is JSON Lines (one object per line, shaped like the
// after-send callbacks, other fields ignored) or CSV with a header row naming
// the same fields, each once; a file whose first non-blank byte is not '{' is CSV.
// The cells of a dead-letter export (jobs.IsDeadLetterCSV), written by
// csvsafe.Cell, are read back exactly as they were before; any other CSV's
// are read as they are, without surrounding spaces. Blank lines are skipped. The first bad line stops the read with a
// *LineError naming file and line; a line (in CSV, a record, the line
// breaks of its quoted cells included) longer than 1 MiB is bad, and is
// read no further.
func ReadList(ctx context.Context, r io.Reader, name string, fn func(line int, m Message) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(4096)
	head = bytes.TrimLeft(head, " \t\r\n\ufeff")
	if len(head) > 0 && head[0] != '{' {
		return readCSV(ctx, br, name, fn)
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	line := 0
	for sc.Scan() {
		line++
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		text := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			text = bytes.TrimPrefix(text, []byte("\ufeff")) // a byte order mark, as the format guess skips it
		}
		if len(text) == 0 {
			continue
		}
		m, err := parseJSONLine(text)
		if err != nil {
			return &LineError{File: name, Line: line, Err: err}
		}
		if err := fn(line, m); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &LineError{File: name, Line: line + 1, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
		}
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

// lineParsers parse JSON Lines: fastjson reads a line without allocating
// for what it skips, about 3 times faster than encoding/json into a map,
// which is what a 10^8-line list file's check (the lead-in of its job) costs.
var lineParsers fastjson.ParserPool

// listFields are the fields a list line is read for, in Message's order.
var listFields = [...]string{"GroupId", "TopicId", "From_Account", "To_Account", "MsgKey", "MsgSeq"}

// parseJSONLine reads one JSON object. As with encoding/json into a map, a
// key repeated counts at its last place, other keys are ignored, and a null
// is an absent field; IDs must be strings and valid UTF-8.
func parseJSONLine(text []byte) (Message, error) {
	if err := fastjson.ValidateBytes(text); err != nil {
		return Message{}, fmt.Errorf("not a JSON object: %v", err)
	}
	p := lineParsers.Get()
	defer lineParsers.Put(p)
	v, err := p.ParseBytes(text)
	if err != nil {
		return Message{}, fmt.Errorf("not a JSON object: %v", err)
	}
	o, err := v.Object()
	if err != nil {
		return Message{}, fmt.Errorf("not a JSON object: it is %s", v.Type())
	}
	var (
		vals   [len(listFields)]string
		errs   [len(listFields)]error
		hasSeq bool
	)
	o.Visit(func(k []byte, v *fastjson.Value) {
		i := slices.Index(listFields[:], string(k))
		if i < 0 {
			return
		}
		vals[i], errs[i] = "", nil
		switch t := v.Type(); {
		case i == len(listFields)-1: // MsgSeq: its JSON text
			vals[i], hasSeq = v.String(), t != fastjson.TypeNull
		case t == fastjson.TypeNull:
		case t != fastjson.TypeString:
			errs[i] = fmt.Errorf("%s: want a string, got %s", k, v)
		default:
			b := v.GetStringBytes()
			if !utf8.Valid(b) {
				errs[i] = fmt.Errorf("%s: not valid UTF-8", k)
				return
			}
			vals[i] = string(b)
		}
	})
	for _, err := range errs[:len(listFields)-1] {
		if err != nil {
			return Message{}, err
		}
	}
	m := Message{GroupID: vals[0], TopicID: vals[1], From: vals[2], To: vals[3], MsgKey: vals[4]}
	if m.GroupID != "" {
		if !hasSeq && vals[5] == "" {
			return m, errors.New("MsgSeq: required with GroupId")
		}
		if m.MsgSeq, err = parseSeq(vals[5]); err != nil {
			return m, err
		}
	}
	return m, validate(m)
}

// parseSeq accepts a positive whole number (a JSON number, or its digits).
func parseSeq(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("MsgSeq: required with GroupId")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || strings.HasPrefix(t, "+") { // digits only, as JSON writes a number
		if len(s) > 128 {
			s = tasks.Quote(s) // not a megabyte of it
		}
		return 0, fmt.Errorf("MsgSeq: %s is not a whole number", s)
	}
	if n <= 0 {
		return 0, fmt.Errorf("MsgSeq: %d must be positive", n)
	}
	return n, nil
}

func validate(m Message) error {
	for _, id := range []struct{ field, value string }{{"GroupId", m.GroupID}, {"TopicId", m.TopicID}, {"From_Account", m.From}, {"To_Account", m.To}} {
		if err := tasks.ValidID(id.value); err != nil {
			return fmt.Errorf("%s %s: %w", id.field, tasks.Quote(id.value), err)
		}
	}
	if m.GroupID != "" {
		if strings.TrimSpace(m.GroupID) != m.GroupID {
			return fmt.Errorf("GroupId %s: surrounding spaces", tasks.Quote(m.GroupID))
		}
		return nil
	}
	switch {
	case m.From == "" && m.To == "" && m.MsgKey == "":
		return errors.New("no message: want GroupId and MsgSeq, or From_Account, To_Account and MsgKey")
	case m.From == "":
		return errors.New("From_Account: required with MsgKey")
	case m.To == "":
		return errors.New("To_Account: required with MsgKey")
	case m.MsgKey == "":
		return errors.New("MsgKey: required with From_Account and To_Account")
	}
	return tasks.ValidMsgKey(m.MsgKey)
}

// csvRecords bounds a CSV record as ReadList bounds a JSON line
// (encoding/csv reads a record whole, however long): a read fails with a
// *LineError once more than maxLine bytes came since the last line break
// outside quotes (a quoted cell's line breaks are part of its record), so
// that one endless cell cannot fill memory. The quotes are counted as
// RFC 4180 writes them; a stray one is the CSV reader's error first.
type csvRecords struct {
	r      io.Reader
	name   string
	n      int  // bytes of the record so far
	quoted bool // inside a quoted cell
	lines  int  // line breaks read
	start  int  // the line the record began on
}

func (c *csvRecords) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i, b := range p[:n] {
		switch b {
		case '"':
			c.quoted = !c.quoted
		case '\n':
			c.lines++
			if !c.quoted {
				c.n, c.start = 0, c.lines+1
				continue
			}
		}
		if c.n++; c.n > maxLine {
			return i, &LineError{File: c.name, Line: c.start, Err: fmt.Errorf("line longer than %d bytes", maxLine)}
		}
	}
	return n, err
}

func readCSV(ctx context.Context, r io.Reader, name string, fn func(int, Message) error) error {
	cr := csv.NewReader(&csvRecords{r: r, name: name, start: 1})
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if le := (*LineError)(nil); errors.As(err, &le) {
		return le
	}
	if err != nil {
		return &LineError{File: name, Line: 1, Err: fmt.Errorf("CSV header: %v", err)}
	}
	col := map[string]int{}
	names := make([]string, len(header))
	for i, h := range header {
		names[i] = strings.TrimPrefix(strings.TrimSpace(h), "\ufeff")
		// A field's second column would silently win over its first.
		if j, ok := col[names[i]]; ok && slices.Contains(listFields[:], names[i]) {
			return &LineError{File: name, Line: 1, Err: fmt.Errorf("CSV header: column %s appears twice (columns %d and %d)", names[i], j+1, i+1)}
		}
		col[names[i]] = i
	}
	// Only imrecall's own export quoted its cells, and it wrote them
	// exactly: another tool's cell that begins with a quote names an ID
	// that does, and spaces around it are its writer's.
	cell := strings.TrimSpace
	if jobs.IsDeadLetterCSV(names) {
		cell = csvsafe.Uncell
	}
	_, hasGroup := col["GroupId"]
	_, hasKey := col["MsgKey"]
	if !hasGroup && !hasKey {
		return &LineError{File: name, Line: 1, Err: errors.New("CSV header: want columns GroupId,MsgSeq[,TopicId] or From_Account,To_Account,MsgKey")}
	}
	if _, ok := col["MsgSeq"]; hasGroup && !ok {
		return &LineError{File: name, Line: 1, Err: errors.New("CSV header: GroupId without MsgSeq")}
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			var le *LineError
			if errors.As(err, &le) {
				return le
			}
			if errors.As(err, &pe) {
				return &LineError{File: name, Line: pe.Line, Err: pe.Err}
			}
			return fmt.Errorf("reading %s: %w", name, err)
		}
		line, _ := cr.FieldPos(0)
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		get := func(k string) string {
			if i, ok := col[k]; ok && i < len(rec) {
				return cell(rec[i])
			}
			return ""
		}
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		m := Message{GroupID: get("GroupId"), TopicID: get("TopicId"), From: get("From_Account"), To: get("To_Account"), MsgKey: get("MsgKey")}
		if m.GroupID != "" {
			if m.MsgSeq, err = parseSeq(get("MsgSeq")); err != nil {
				return &LineError{File: name, Line: line, Err: err}
			}
		}
		if err := validate(m); err != nil {
			return &LineError{File: name, Line: line, Err: err}
		}
		if err := fn(line, m); err != nil {
			return err
		}
	}
}

// ListSummary is what a validation pass found in a list file.
type ListSummary struct {
	Messages      int `json:"messages"` // lines naming a message, duplicates included
	GroupMsgs     int `json:"group_messages"`
	C2CMsgs       int `json:"c2c_messages"`
	Groups        int `json:"groups"`        // distinct groups/topics
	Conversations int `json:"conversations"` // distinct one-to-one conversations
	GroupCalls    int `json:"group_calls"`   // group_msg_recall calls needed (10 seqs a call), duplicates included
	C2CCalls      int `json:"c2c_calls"`     // admin_msgwithdraw calls needed
}

// CheckListFile reads a whole list file without changing anything and
// returns what it holds, or the first bad line. recall file sends nothing
// until it has: its time is the job's lead-in (docs/BENCHMARKS.md).
func CheckListFile(ctx context.Context, path string) (ListSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return ListSummary{}, fmt.Errorf("opening list file: %w", err)
	}
	defer f.Close()
	return CheckList(ctx, f, path)
}

// CheckList is CheckListFile of a list read from r (name is what line
// errors name).
func CheckList(ctx context.Context, r io.Reader, name string) (ListSummary, error) {
	var s ListSummary
	perGroup := map[jobs.Target]int{}
	convs := map[jobs.Target]bool{}
	err := ReadList(ctx, r, name, func(_ int, m Message) error {
		s.Messages++
		t := m.Target()
		if t.IsGroup() {
			s.GroupMsgs++
			perGroup[t]++
		} else {
			s.C2CMsgs++
			convs[t] = true
		}
		return nil
	})
	s.Groups, s.Conversations, s.C2CCalls = len(perGroup), len(convs), s.C2CMsgs
	for _, n := range perGroup {
		s.GroupCalls += (n + 9) / 10
	}
	return s, err
}

// SpoolListFile checks the list file at path as CheckListFile does and
// keeps the bytes it checked in a private file (mode 0600, in dir; "" is
// the system's temporary directory) that has no name: it is unlinked as
// soon as it is created, so that no copy of the list (user and group ids)
// is left behind by a process that is killed, and it is gone when the
// caller closes it. The returned file is at its start. A job planned from
// it recalls what was checked, and confirmed, even if the file grows or
// changes meanwhile (a log still written) or cannot be read twice (a
// pipe). On an error there is no spool.
func SpoolListFile(ctx context.Context, path, dir string) (spool *os.File, s ListSummary, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, s, fmt.Errorf("opening list file: %w", err)
	}
	defer f.Close()
	tmp, err := os.CreateTemp(dir, "imrecall-list-*")
	if err != nil {
		return nil, s, fmt.Errorf("spooling the list file: %w", err)
	}
	if err := os.Remove(tmp.Name()); err != nil {
		tmp.Close()
		return nil, s, fmt.Errorf("spooling the list file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			spool = nil
		}
	}()
	w := &spoolWriter{w: tmp}
	s, err = CheckList(ctx, io.TeeReader(f, w), path)
	if err == nil && w.err != nil {
		err = fmt.Errorf("spooling the list file: %w", w.err)
	}
	if err == nil {
		if _, serr := tmp.Seek(0, io.SeekStart); serr != nil {
			err = fmt.Errorf("spooling the list file: %w", serr)
		}
	}
	return tmp, s, err
}

// spoolWriter keeps the first write error for SpoolListFile to report
// (a TeeReader would report it as a read error of the list).
type spoolWriter struct {
	w   io.Writer
	err error
}

func (s *spoolWriter) Write(b []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
	return len(b), nil
}

// PlanList plans and enqueues every message of a list file into job, then
// closes the job's root planner. Check the file first (SpoolListFile, and
// plan from the spool): a bad line found here fails the job's planning.
func PlanList(ctx context.Context, store *jobs.Store, q Enqueuer, job jobs.Job, path string) (*Batcher, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening list file: %w", err)
	}
	defer f.Close()
	b := NewBatcher(store, q, job, 0)
	err = ReadList(ctx, f, path, func(_ int, m Message) error {
		return b.AddMessage(ctx, m)
	})
	if err == nil {
		err = b.Flush(ctx)
	}
	if err != nil {
		return b, err
	}
	if _, err := store.ClosePlanner(ctx, job.ID, jobs.RootPlanner); err != nil {
		return b, err
	}
	return b, nil
}

// AddMessage adds one message of either kind.
func (b *Batcher) AddMessage(ctx context.Context, m Message) error {
	if m.GroupID != "" {
		return b.AddGroup(ctx, m.Target(), m.MsgSeq)
	}
	return b.AddC2C(ctx, m.Target(), m.MsgKey)
}

// Validate names the first bad field of a message given outside a list file
// (an API request, a command line).
func (m Message) Validate() error {
	if m.GroupID != "" && m.MsgSeq <= 0 {
		return fmt.Errorf("MsgSeq %d: want a positive number with GroupId", m.MsgSeq)
	}
	return validate(m)
}
