package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/imrecall/imrecall/api"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/redistest"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/msgindex"
	"github.com/imrecall/imrecall/producer"
	"github.com/imrecall/imrecall/tasks"
	"github.com/imrecall/imrecall/worker"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
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
	if !strings.HasPrefix(name, cli.EnvPrefix) {
		return
	}
	for _, args := range commands {
		cmd, _, err := newRootCmd().Find(args)
		if err != nil {
			continue
		}
		flag := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, cli.EnvPrefix), "_", "-"))
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
					if strings.HasPrefix(k, cli.EnvPrefix) {
						envs = append(envs, k)
					}
				}
				if n, ok := m["name"]; ok && strings.HasPrefix(n.Value, cli.EnvPrefix) {
					envs = append(envs, n.Value)
				}
				if n, ok := m["expr"]; ok {
					for _, name := range regexp.MustCompile(`imrecall_[a-z_]+`).FindAllString(n.Value, -1) {
						base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
						if _, ok := knownMetrics[base]; !ok {
							t.Errorf("%s: alert uses %s, which imrecall does not export", f, name)
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

// workerCollectors are what a worker registers: its metrics and its
// limiter's.
func workerCollectors(t *testing.T) []prometheus.Collector {
	t.Helper()
	reg := &captureRegisterer{}
	worker.NewMetrics(reg)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: the limiter only describes itself
	t.Cleanup(func() { _ = rdb.Close() })
	lim, err := limiter.New(rdb, limiter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	worker.RegisterLimiter(reg, lim, 1400000001)
	return reg.collectors
}

// exportedMetric is a metric the dashboard and the alerts may use.
type exportedMetric struct {
	labels    []string
	histogram bool   // also exported as _bucket, _count and _sum (with le on _bucket)
	source    string // worker, serve or asynq
}

// knownMetrics are the metrics imrecall and asynq export: the worker's
// (worker/metrics.go), imrecall serve's (imrecall_job_messages from
// api.NewJobCollector, imrecall_callbacks_total from
// msgindex.NewCallbackCounter, imrecall_index_confirmations_total from
// msgindex.NewConfirmCounter) and asynq's queue collector, which serve
// registers (github.com/hibiken/asynq/x/metrics). TestDeployKnownMetrics
// checks the list against the code.
var knownMetrics = map[string]exportedMetric{
	"imrecall_api_calls_total":              {labels: []string{"api", "code"}, source: "worker"},
	"imrecall_api_call_duration_seconds":    {labels: []string{"api"}, histogram: true, source: "worker"},
	"imrecall_messages_total":               {labels: []string{"outcome"}, source: "worker"},
	"imrecall_limiter_wait_seconds":         {labels: []string{"api"}, histogram: true, source: "worker"},
	"imrecall_limiter_interval_seconds":     {labels: []string{"api"}, source: "worker"},
	"imrecall_limiter_late_slots_total":     {source: "worker"},
	"imrecall_callbacks_total":              {labels: []string{"command", "result"}, source: "serve"},
	"imrecall_index_confirmations_total":    {labels: []string{"result"}, source: "serve"},
	"imrecall_job_messages":                 {labels: []string{"job_id", "kind", "state"}, source: "serve"},
	"imrecall_schedule_firings_total":       {labels: []string{"schedule", "result"}, source: "scheduler"},
	"asynq_tasks_enqueued_total":            {labels: []string{"queue", "state"}, source: "asynq"},
	"asynq_queue_size":                      {labels: []string{"queue"}, source: "asynq"},
	"asynq_queue_latency_seconds":           {labels: []string{"queue"}, source: "asynq"},
	"asynq_queue_memory_usage_approx_bytes": {labels: []string{"queue"}, source: "asynq"},
	"asynq_tasks_processed_total":           {labels: []string{"queue"}, source: "asynq"},
	"asynq_tasks_failed_total":              {labels: []string{"queue"}, source: "asynq"},
	"asynq_queue_paused_total":              {labels: []string{"queue"}, source: "asynq"},
}

// promFunctions are the PromQL functions and aggregations a deploy file may call.
var promFunctions = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "group": true, "topk": true, "bottomk": true,
	"quantile": true, "stddev": true, "rate": true, "irate": true, "increase": true, "deriv": true, "delta": true,
	"histogram_quantile": true, "max_over_time": true, "min_over_time": true, "avg_over_time": true,
	"clamp_min": true, "clamp_max": true, "vector": true, "scalar": true, "absent": true, "round": true,
}

// promKeywords are PromQL words that name neither a metric nor a function.
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}

// promGrouping are the clauses whose parenthesised list holds label names.
var promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

// promRefs splits a PromQL expression (which may hold Grafana variables such
// as $cap or $__rate_interval) into the metric names and the label names it
// uses, and fails on a call of an unknown function.
func promRefs(expr string) (metrics, labels []string, err error) {
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
	}
	ident := func(i int) int {
		j := i
		for j < len(expr) && isIdent(expr[j], j == i) {
			j++
		}
		return j
	}
	skipString := func(i int) int { // i at the opening quote; returns the index after the closing one
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			if expr[j] == '\\' && q != '`' {
				j++
			} else if expr[j] == q {
				return j + 1
			}
		}
		return len(expr)
	}
	skipSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\r\n", rune(expr[i])) {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipString(i)
		case c == '$': // a Grafana variable: $name or ${name}
			if i+1 < len(expr) && expr[i+1] == '{' {
				i += strings.IndexByte(expr[i:], '}') + 1
			} else {
				i = ident(i + 1)
			}
		case c == '[': // a range or subquery: durations and variables
			i += strings.IndexByte(expr[i:], ']') + 1
		case c == '{': // label matchers
			for i++; i < len(expr) && expr[i] != '}'; {
				switch {
				case expr[i] == '"' || expr[i] == '\'' || expr[i] == '`':
					i = skipString(i)
				case isIdent(expr[i], true):
					j := ident(i)
					labels = append(labels, expr[i:j])
					i = j
				default:
					i++
				}
			}
			i++
		case c >= '0' && c <= '9' || c == '.': // a number or a duration
			for i < len(expr) && (isIdent(expr[i], false) || expr[i] == '.') {
				i++
			}
		case isIdent(c, true):
			j := ident(i)
			word := expr[i:j]
			next := skipSpace(j)
			switch {
			case promGrouping[word]:
				if next >= len(expr) || expr[next] != '(' {
					return nil, nil, fmt.Errorf("%q: %s without a label list", expr, word)
				}
				end := strings.IndexByte(expr[next:], ')') + next
				for _, l := range strings.Split(expr[next+1:end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						labels = append(labels, l)
					}
				}
				j = end + 1
			case promKeywords[word]:
			case promFunctions[word]:
			case next < len(expr) && expr[next] == '(':
				return nil, nil, fmt.Errorf("%q: unknown function %s", expr, word)
			default:
				metrics = append(metrics, word)
			}
			i = j
		default:
			i++
		}
	}
	return metrics, labels, nil
}

// checkPromQL fails the test if expr uses a metric nobody exports, a label
// none of its metrics has, or an unknown function; it returns the base names
// of the metrics used.
func checkPromQL(t *testing.T, where, expr string) []string {
	t.Helper()
	metrics, labels, err := promRefs(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	allowed := map[string]bool{"instance": true, "job": true}
	var bases []string
	for _, name := range metrics {
		base := name
		m, ok := knownMetrics[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if b, cut := strings.CutSuffix(name, suffix); cut && knownMetrics[b].histogram {
					base, m, ok = b, knownMetrics[b], true
					if suffix == "_bucket" {
						allowed["le"] = true
					}
				}
			}
		}
		if !ok {
			t.Errorf("%s: %q uses %s, which neither imrecall nor asynq exports", where, expr, name)
			continue
		}
		bases = append(bases, base)
		for _, l := range m.labels {
			allowed[l] = true
		}
	}
	for _, l := range labels {
		if !allowed[l] {
			t.Errorf("%s: %q uses label %s, which none of %v has", where, expr, l, metrics)
		}
	}
	return bases
}

// TestDeployKnownMetrics keeps knownMetrics true to the code: every metric
// of the worker (worker.NewMetrics, worker.RegisterLimiter), of imrecall serve (api.NewJobCollector,
// msgindex.NewCallbackCounter) and of asynq's queue collector (described
// against a private redis-server holding a task) is listed with its labels
// and source, and every listed metric is exported by its source.
func TestDeployKnownMetrics(t *testing.T) {
	desc := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	got := map[string]exportedMetric{}
	describe := func(source string, cols ...prometheus.Collector) {
		for _, col := range cols {
			ch := make(chan *prometheus.Desc, 16)
			go func() { col.Describe(ch); close(ch) }()
			for d := range ch {
				if m := desc.FindStringSubmatch(d.String()); m != nil {
					var labels []string
					if m[2] != "" {
						labels = strings.Split(m[2], ",")
					}
					got[m[1]] = exportedMetric{labels: labels, source: source}
				}
			}
		}
	}
	describe("worker", workerCollectors(t)...)
	describe("serve", api.NewJobCollector(nil), msgindex.NewCallbackCounter(), msgindex.NewConfirmCounter())
	scheduler := &captureRegisterer{}
	producer.NewSchedulerMetrics(scheduler)
	describe("scheduler", scheduler.collectors...)

	// asynq's collector describes by collecting, so it needs a queue.
	srv := redistest.Start(t)
	opt := asynq.RedisClientOpt{Addr: srv.Addr()}
	client := asynq.NewClient(opt)
	defer client.Close()
	if _, err := client.EnqueueContext(t.Context(), asynq.NewTask("test:metrics", nil), asynq.Queue(tasks.QueueIncident)); err != nil {
		t.Fatal(err)
	}
	inspector := asynq.NewInspector(opt)
	defer inspector.Close()
	describe("asynq", asynqmetrics.NewQueueMetricsCollector(inspector))

	for name, g := range got {
		k, ok := knownMetrics[name]
		if !ok {
			t.Errorf("%s exports %s%v, which knownMetrics does not list", g.source, name, g.labels)
			continue
		}
		if !slices.Equal(k.labels, g.labels) || k.source != g.source {
			t.Errorf("%s: exported by %s with labels %v; knownMetrics says %s, %v", name, g.source, g.labels, k.source, k.labels)
		}
	}
	for name, k := range knownMetrics {
		if _, ok := got[name]; !ok {
			t.Errorf("knownMetrics lists %s as exported by %s, which does not export it", name, k.source)
		}
	}
}

// TestDeployPromQL checks the expression scanner the deploy tests rely on.
func TestDeployPromQL(t *testing.T) {
	metrics, labels, err := promRefs(`sum by (api, le) (rate(imrecall_limiter_wait_seconds_bucket{api=~"a|b", code!="0"}[$__rate_interval])) / $cap > 1.5e3 and on(job) up offset 5m`)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"imrecall_limiter_wait_seconds_bucket", "up"}, metrics); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"api", "le", "api", "code", "job"}, labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if _, _, err := promRefs(`histogram_quantil(0.9, x)`); err == nil {
		t.Error("a misspelt function was accepted")
	}
}

// TestDeployDashboard parses the Grafana dashboard: every query names
// metrics and labels that imrecall or asynq export, every panel reads the
// dashboard's datasource variable, and every metric has a panel.
func TestDeployDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "grafana", "imrecall.json"))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	}
	type panel struct {
		ID         int                      `json:"id"`
		Type       string                   `json:"type"`
		Title      string                   `json:"title"`
		Datasource map[string]any           `json:"datasource"`
		GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
		Targets    []target                 `json:"targets"`
		Panels     []panel                  `json:"panels"`
	}
	var dash struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type       string         `json:"type"`
				Name       string         `json:"name"`
				Query      any            `json:"query"`
				Definition string         `json:"definition"`
				Datasource map[string]any `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("imrecall.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard uid %q, title %q: want both", dash.UID, dash.Title)
	}

	const dsRef = "${datasource}"
	vars := map[string]bool{}
	used := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			if v.Name != "datasource" || v.Query != "prometheus" {
				t.Errorf("datasource variable %q of type %v: want \"datasource\" of prometheus", v.Name, v.Query)
			}
		case "query":
			if v.Datasource["uid"] != dsRef {
				t.Errorf("variable %s: datasource %v, want %s", v.Name, v.Datasource, dsRef)
			}
			m := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`).FindStringSubmatch(v.Definition)
			if m == nil {
				t.Errorf("variable %s: query %q: want label_values(metric, label)", v.Name, v.Definition)
				continue
			}
			for _, base := range checkPromQL(t, "variable "+v.Name, m[1]+`{`+m[2]+`!=""}`) {
				used[base] = true
			}
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable")
	}

	ids := map[int]string{}
	var check func(ps []panel)
	check = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("%s: id also used by %q", where, prev)
			}
			ids[p.ID] = p.Title
			if p.Title == "" || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("%s: want a title and a gridPos within 24 columns, got %+v", where, p.GridPos)
			}
			check(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource["uid"] != dsRef {
				t.Errorf("%s: datasource %v, want the variable %s", where, p.Datasource, dsRef)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource["uid"] != dsRef {
					t.Errorf("%s %s: datasource %v, want %s", where, tg.RefID, tg.Datasource, dsRef)
				}
				for _, v := range regexp.MustCompile(`\$(\w+)`).FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
						t.Errorf("%s %s: $%s is not a dashboard variable", where, tg.RefID, v[1])
					}
				}
				for _, base := range checkPromQL(t, where+" "+tg.RefID, tg.Expr) {
					used[base] = true
				}
			}
		}
	}
	check(dash.Panels)
	for name := range knownMetrics {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}

// TestDeployAlertMetrics checks every alert expression (imrecall's and
// asynq's metrics alike), and that the queue-latency alert covers every
// queue with a threshold that is stricter the higher the queue's priority.
func TestDeployAlertMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string            `yaml:"alert"`
				Expr   string            `yaml:"expr"`
				For    string            `yaml:"for"`
				Labels map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	latency := map[string]float64{}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %q: want an alert name and a severity", r.Expr)
			}
			bases := checkPromQL(t, "alert "+r.Alert, r.Expr)
			if !slices.Contains(bases, "asynq_queue_latency_seconds") {
				continue
			}
			m := regexp.MustCompile(`queue=~?"([\w|-]+)"\}\)\s*>\s*([0-9.]+)\s*$`).FindStringSubmatch(strings.TrimSpace(r.Expr))
			if m == nil {
				t.Errorf("alert %s: %q: want max by (queue) (asynq_queue_latency_seconds{queue=~\"Q1|Q2\"}) > SECONDS", r.Alert, r.Expr)
				continue
			}
			secs, _ := strconv.ParseFloat(m[2], 64)
			for _, q := range strings.Split(m[1], "|") {
				latency[q] = secs
			}
		}
	}
	if n < 5 {
		t.Fatalf("alerts.yaml: %d rules", n)
	}
	// Every queue of every lane has an alert, stricter for higher priorities.
	for _, lane := range []map[string]int{tasks.Queues, tasks.C2CQueues, tasks.DiscoveryQueues} {
		queues := slices.SortedFunc(maps.Keys(lane), func(a, b string) int { return lane[b] - lane[a] })
		for i, q := range queues {
			if _, ok := latency[q]; !ok {
				t.Errorf("no queue-latency alert for queue %s", q)
				continue
			}
			if i > 0 && latency[queues[i-1]] >= latency[q] {
				t.Errorf("queue latency alert: %s (priority %d) fires at %vs, not stricter than %s (priority %d) at %vs",
					queues[i-1], lane[queues[i-1]], latency[queues[i-1]], q, lane[q], latency[q])
			}
		}
	}
	if len(latency) != len(tasks.AllQueues()) {
		t.Errorf("queue-latency alerts name %d queues, want the %d of tasks.AllQueues()", len(latency), len(tasks.AllQueues()))
	}
}

// TestDeployServeHasACallbackToken: serve refuses to start without a
// callback token (unless --insecure-callbacks), so every deploy file that
// runs serve must give it one: compose requires the variable (${VAR:?…}),
// Kubernetes takes it from a Secret that is not optional.
func TestDeployServeHasACallbackToken(t *testing.T) {
	for _, f := range []string{filepath.Join(deployDir, "compose.yaml"), filepath.Join(deployDir, "k8s", "imrecall.yaml")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		serves := 0
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); err != nil {
				break
			}
			walk(&doc, func(m map[string]*yaml.Node) {
				var args []string
				for _, key := range []string{"command", "args"} {
					if n, ok := m[key]; ok && n.Kind == yaml.SequenceNode {
						args = strs(n)
					}
				}
				if len(args) == 0 || args[0] != "serve" {
					return
				}
				serves++
				if slices.Contains(args, "--insecure-callbacks") {
					t.Errorf("%s: serve runs with --insecure-callbacks", f)
				}
				ok := false
				if env, has := m["environment"]; has { // compose
					walk(env, func(e map[string]*yaml.Node) {
						if v, has := e["IMRECALL_CALLBACK_TOKEN"]; has && strings.HasPrefix(v.Value, "${IMRECALL_CALLBACK_TOKEN:?") {
							ok = true
						}
					})
				}
				if env, has := m["env"]; has { // Kubernetes
					walk(env, func(e map[string]*yaml.Node) {
						if n, has := e["name"]; has && n.Value == "IMRECALL_CALLBACK_TOKEN" {
							vf, has := e["valueFrom"]
							ok = has
							if has {
								walk(vf, func(r map[string]*yaml.Node) {
									if o, has := r["optional"]; has && o.Value == "true" {
										ok = false
									}
								})
							}
						}
					})
				}
				if !ok {
					t.Errorf("%s: serve is not given a required IMRECALL_CALLBACK_TOKEN", f)
				}
			})
		}
		if serves == 0 {
			t.Errorf("%s: no serve command found", f)
		}
	}
}
