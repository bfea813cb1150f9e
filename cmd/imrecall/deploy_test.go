package main

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imrecall/imrecall/worker"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// deployDir is the repository's deploy/ folder.
const deployDir = "../../deploy"

// checkArgs fails if args is not an imrecall command line whose every flag
// the binary defines.
func checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	cmd, rest, err := newRootCmd().Find(args)
	if err != nil || !cmd.Runnable() {
		t.Errorf("%s: imrecall %v: not a command (%v)", where, args, err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: imrecall %s: %v", where, strings.Join(args, " "), err)
	}
}

// checkEnv fails if an IMRECALL_* variable names no flag of any command.
func checkEnv(t *testing.T, where, name string, commands [][]string) {
	t.Helper()
	if !strings.HasPrefix(name, envPrefix) {
		return
	}
	for _, args := range commands {
		cmd, _, err := newRootCmd().Find(args)
		if err != nil {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "-"))
		if cmd.Flags().Lookup(flag) != nil {
			return
		}
	}
	t.Errorf("%s: %s sets no flag of %v", where, name, commands)
}

// walk visits every mapping of a YAML document.
func walk(n *yaml.Node, fn func(m map[string]*yaml.Node)) {
	if n.Kind == yaml.MappingNode {
		m := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = n.Content[i+1]
		}
		fn(m)
	}
	for _, c := range n.Content {
		walk(c, fn)
	}
	if n.Alias != nil {
		walk(n.Alias, fn)
	}
}

func strs(n *yaml.Node) []string {
	var out []string
	for _, c := range n.Content {
		out = append(out, c.Value)
	}
	return out
}

// TestDeployFiles parses every file of deploy/ and checks that the binary
// honours the commands, flags and variables they use, and that the alerts
// name metrics the worker exports.
func TestDeployFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(deployDir, "*.yaml"))
	more, _ := filepath.Glob(filepath.Join(deployDir, "*", "*.yaml"))
	files = append(files, more...)
	if len(files) < 3 {
		t.Fatalf("deploy YAML files: %v", files)
	}
	metrics := workerMetricNames(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		var commands [][]string
		var envs []string
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				if err.Error() != "EOF" {
					t.Fatalf("%s: %v", f, err)
				}
				break
			}
			walk(&doc, func(m map[string]*yaml.Node) {
				for _, key := range []string{"command", "args"} {
					if n, ok := m[key]; ok && n.Kind == yaml.SequenceNode {
						if args := strs(n); len(args) > 0 && args[0] != "redis-server" && args[0] != "CMD" {
							checkArgs(t, f, args)
							commands = append(commands, args)
						}
					}
				}
				for k := range m {
					if strings.HasPrefix(k, envPrefix) {
						envs = append(envs, k)
					}
				}
				if n, ok := m["name"]; ok && strings.HasPrefix(n.Value, envPrefix) {
					envs = append(envs, n.Value)
				}
				if n, ok := m["expr"]; ok {
					for _, name := range regexp.MustCompile(`imrecall_[a-z_]+`).FindAllString(n.Value, -1) {
						base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
						if !metrics[base] {
							t.Errorf("%s: alert uses %s, which the worker does not export", f, name)
						}
					}
				}
			})
		}
		if len(commands) == 0 {
			commands = [][]string{{"worker"}}
		}
		for _, e := range envs {
			checkEnv(t, f, e, commands)
		}
	}

	unit, err := os.Open(filepath.Join(deployDir, "systemd", "imrecall-worker.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer unit.Close()
	sc := bufio.NewScanner(unit)
	found := false
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			fields := strings.Fields(rest)
			checkArgs(t, "systemd unit", fields[1:])
			found = true
		}
	}
	if !found {
		t.Error("systemd unit: no ExecStart")
	}
	if df, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile")); err != nil || !strings.Contains(string(df), "nonroot") || !strings.Contains(string(df), "CGO_ENABLED=0") {
		t.Errorf("Dockerfile: want a static build on a non-root base (%v)", err)
	}
}

// captureRegisterer records what is registered with it.
type captureRegisterer struct{ collectors []prometheus.Collector }

func (c *captureRegisterer) Register(col prometheus.Collector) error {
	c.collectors = append(c.collectors, col)
	return nil
}
func (c *captureRegisterer) MustRegister(cols ...prometheus.Collector) {
	c.collectors = append(c.collectors, cols...)
}
func (c *captureRegisterer) Unregister(prometheus.Collector) bool { return false }

// workerMetricNames are the names of every metric the worker registers.
func workerMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := &captureRegisterer{}
	worker.NewMetrics(reg)
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, col := range reg.collectors {
		ch := make(chan *prometheus.Desc, 8)
		go func() { col.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fq.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
	}
	if len(names) < 4 {
		t.Fatalf("worker metrics: %v", names)
	}
	return names
}
