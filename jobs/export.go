package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/imrecall/imrecall/internal/csvsafe"
)

// ExportFormats are the formats ExportDeadLetters writes.
var ExportFormats = []string{"jsonl", "csv"}

// deadLetterCSVHeader is the header row of a dead-letter export in CSV.
var deadLetterCSVHeader = [...]string{"job_id", "GroupId", "TopicId", "MsgSeq", "From_Account", "To_Account", "MsgKey", "code", "category", "error_info", "attempts", "at"}

// IsDeadLetterCSV says whether header (its cells without surrounding
// spaces) is the header row of ExportDeadLetters's CSV: the cells of such a
// file went through csvsafe.Cell, and csvsafe.Uncell reads them back. The
// cells of any other CSV are as their writer meant them.
func IsDeadLetterCSV(header []string) bool {
	return slices.Equal(header, deadLetterCSVHeader[:])
}

// ExportDeadLetters writes the dead letters of a job that match (nil: all)
// to w as JSON Lines or CSV (with a header row of Tencent's field names, so
// the file feeds `imrecall recall file`), and returns how many it wrote.
// JSON Lines are exact; a CSV cell that a spreadsheet would take for a
// formula is written with a single quote before it (csvsafe.Cell), which
// `imrecall recall file` removes.
func (s *Store) ExportDeadLetters(ctx context.Context, jobID string, match func(DeadLetter) bool, format string, w io.Writer) (int, error) {
	if format != "jsonl" && format != "csv" {
		return 0, fmt.Errorf("format %q: want jsonl or csv", format)
	}
	n := 0
	var cw *csvsafe.Writer
	enc := json.NewEncoder(w)
	if format == "csv" {
		cw = csvsafe.NewWriter(w)
		_ = cw.Write(deadLetterCSVHeader[:])
	}
	err := s.DeadLetters(ctx, jobID, func(d DeadLetter) error {
		if match != nil && !match(d) {
			return nil
		}
		n++
		if cw == nil {
			return enc.Encode(d)
		}
		seq := ""
		if d.MsgSeq != 0 {
			seq = strconv.FormatInt(d.MsgSeq, 10)
		}
		return cw.Write([]string{d.JobID, d.GroupID, d.TopicID, seq, d.From, d.To, d.MsgKey, d.Code, string(d.Category),
			d.ErrorInfo, strconv.Itoa(d.Attempts), d.At.Format(time.RFC3339Nano)})
	})
	if cw != nil {
		cw.Flush()
		if err == nil {
			err = cw.Error()
		}
	}
	return n, err
}
