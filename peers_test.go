package imrecall_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imrecall/imrecall"
)

// TestReadPeersNamesTheLine: a peers file's bad line is named by file and
// line, as a list file's is, and read no further than a bound: a UserID
// with a control character or over tasks.MaxIDLen was taken from the file
// and refused later as "peers: element N", which names neither, and the
// whole file was read into memory whatever its size.
func TestReadPeersNamesTheLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, body, want string }{
		{"control character", "alice\nbob\x1b[2K\n", ":2: "},
		{"not UTF-8", "alice\n# a comment\n\nbob\xff\n", ":4: "},
		{"over MaxIDLen", "alice\n" + strings.Repeat("u", 1025) + "\n", ":2: "},
		{"a line of 8 MB", "alice\n" + strings.Repeat("u", 8<<20) + "\n", ":2: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "peers.txt")
			if err := os.WriteFile(p, []byte(c.body), 0o600); err != nil {
				t.Fatal(err)
			}
			ps, err := imrecall.ReadPeers("carol", p)
			if err == nil || !strings.HasPrefix(err.Error(), p+c.want) || len(err.Error()) > 300 {
				t.Fatalf("ReadPeers = %q, %.300v; want an error naming %s%s", ps, err, p, c.want)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "peers.txt")
	if err := os.WriteFile(p, []byte("\ufeffalice\r\n# comment\r\n\r\n bob \r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ps, err := imrecall.ReadPeers("carol, dave", p); err != nil || strings.Join(ps, ",") != "carol,dave,alice,bob" {
		t.Fatalf("ReadPeers = %q, %v; want carol, dave, alice, bob", ps, err)
	}
}
