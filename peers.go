package imrecall

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/imrecall/imrecall/tasks"
)

// maxPeersLine bounds a line of a peers file: a UserID (tasks.MaxIDLen)
// or a comment.
const maxPeersLine = 64 << 10

// ReadPeers gathers UserPurge.Peers from a comma-separated list and a file
// of one UserID per line (a byte order mark, blank lines and # comments
// skipped); a bad line (not one UserID, not a valid ID, longer than 64
// KiB) is an error naming FILE:LINE, and the file is read no further.
func ReadPeers(list, file string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(list, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if file == "" {
		return out, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--peers-file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxPeersLine)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t,") {
			return nil, fmt.Errorf("%s:%d: %s: want one UserID per line", file, n, tasks.Quote(line))
		}
		if err := tasks.ValidID(line); err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", file, n, tasks.Quote(line), err)
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes", file, n+1, maxPeersLine)
		}
		return nil, fmt.Errorf("--peers-file: %w", err)
	}
	return out, nil
}
