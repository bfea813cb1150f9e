package imrecall

import (
	"fmt"
	"os"
	"strings"

	"github.com/imrecall/imrecall/tasks"
)

// ReadPeers gathers UserPurge.Peers from a comma-separated list and a file
// of one UserID per line (blank lines and # comments skipped); a bad line
// is an error naming FILE:LINE.
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
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--peers-file: %w", err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t,") {
			return nil, fmt.Errorf("%s:%d: %s: want one UserID per line", file, i+1, tasks.Quote(line))
		}
		out = append(out, line)
	}
	return out, nil
}
