package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
)

// children are the child processes of one run: its workers (and, for
// --via index, imrecall serve).
type children struct {
	mu     sync.Mutex
	procs  []*exec.Cmd
	exited []chan error // each receives the process's Wait result once
	logs   []*os.File
	done   bool
}

// start starts one child process, its output to logPath.
func (w *children) start(ctx context.Context, bin string, args, env []string, logPath string) error {
	lf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating the log %s: %w", logPath, err)
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = env
	c.Stdout, c.Stderr = lf, lf
	// Interrupted or timed out: let the worker drain; SIGKILL if it lingers.
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 20 * time.Second
	if err := c.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("starting %s %s: %w", bin, args[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.procs = append(w.procs, c)
	w.exited = append(w.exited, exited)
	w.logs = append(w.logs, lf)
	return nil
}

// awaitRegistered waits until asynq lists the servers of every worker
// process, one per lane (group recall, one-to-one withdraw, discovery).
func (w *children) awaitRegistered(ctx context.Context, opt asynq.RedisConnOpt) error {
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	want := map[int]bool{}
	for _, c := range w.procs {
		want[c.Process.Pid] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		servers, err := insp.Servers()
		perPID := map[int]int{}
		for _, s := range servers {
			if want[s.PID] {
				perPID[s.PID]++
			}
		}
		n := 0
		for _, k := range perPID {
			if k >= 3 {
				n++
			}
		}
		if err == nil && n == len(want) {
			return nil
		}
		for i, ch := range w.exited {
			select {
			case werr := <-ch:
				ch <- werr // stop() reads it again
				return fmt.Errorf("worker %d exited before it registered: %v (see its log)", w.procs[i].Process.Pid, werr)
			default:
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("listing asynq servers: %w", err)
			}
			return fmt.Errorf("only %d of %d workers registered with asynq within 30 s", n, len(want))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for workers to start: %w", context.Cause(ctx))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to every worker, waits (SIGKILL after 30 s) and
// returns what each used. Calling it again does nothing.
func (w *children) stop() ([]Proc, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil, nil
	}
	w.done = true
	defer func() {
		for _, lf := range w.logs {
			_ = lf.Close()
		}
	}()
	// VmHWM only grows, and an idle worker's shutdown adds nothing to it:
	// read it while the process is still there.
	hwm := make([]int64, len(w.procs))
	for i, c := range w.procs {
		hwm[i] = vmHWM(c.Process.Pid)
		_ = c.Process.Signal(syscall.SIGTERM) // an exited process: nothing to do
	}
	out := make([]Proc, len(w.procs))
	var errs []error
	for i, c := range w.procs {
		var err error
		select {
		case err = <-w.exited[i]:
		case <-time.After(30 * time.Second):
			_ = c.Process.Kill()
			err = <-w.exited[i]
			errs = append(errs, fmt.Errorf("%s (pid %d) did not stop within 30 s of SIGTERM; killed", c.Args[1], c.Process.Pid))
		}
		if c.ProcessState == nil {
			errs = append(errs, fmt.Errorf("waiting for %s (pid %d): %w", c.Args[1], c.Process.Pid, err))
			continue
		}
		if !c.ProcessState.Success() {
			errs = append(errs, fmt.Errorf("%s (pid %d): %s", c.Args[1], c.Process.Pid, c.ProcessState))
		}
		ps := c.ProcessState
		out[i] = Proc{PID: ps.Pid(), CPUSeconds: (ps.UserTime() + ps.SystemTime()).Seconds(), PeakRSS: hwm[i]}
	}
	return out, errors.Join(errs...)
}

// producerProc is the purge command of a run, started with --wait: it plans
// (lists the scans, queues discovery), prints the job id, and then follows
// the job until it ends, so its high-water RSS can be read from /proc while
// it lives.
type producerProc struct {
	cmd     *exec.Cmd
	logFile *os.File
	jobID   chan string // the job id it printed, once
	exited  chan error  // its Wait result, once
	mu      sync.Mutex
	hwm     int64 // the largest VmHWM sampled
}

// startProducer starts the purge command.
func startProducer(ctx context.Context, bin string, args, env []string, logPath string) (*producerProc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the purge command's log: %w", err)
	}
	c := exec.CommandContext(ctx, bin, args...)
	c.Env = env
	c.Stderr = lf
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 10 * time.Second
	stdout, err := c.StdoutPipe()
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("piping the purge command's output: %w", err)
	}
	if err := c.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting imrecall %s %s: %w", args[0], args[1], err)
	}
	p := &producerProc{cmd: c, logFile: lf, jobID: make(chan string, 1), exited: make(chan error, 1)}
	go func() {
		var created struct {
			JobID string `json:"job_id"`
		}
		if err := json.NewDecoder(stdout).Decode(&created); err == nil && created.JobID != "" {
			p.jobID <- created.JobID
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		waited := make(chan error, 1)
		go func() { waited <- c.Wait() }()
		for {
			p.sample()
			select {
			case err := <-waited:
				p.exited <- err
				return
			case <-tick.C:
			}
		}
	}()
	return p, nil
}

func (p *producerProc) sample() {
	if n := vmHWM(p.cmd.Process.Pid); n > 0 {
		p.mu.Lock()
		p.hwm = max(p.hwm, n)
		p.mu.Unlock()
	}
}

// awaitJob returns the job id the purge command printed.
func (p *producerProc) awaitJob(ctx context.Context) (string, error) {
	select {
	case id := <-p.jobID:
		return id, nil
	case err := <-p.exited:
		p.exited <- err
		return "", fmt.Errorf("the purge command ended without printing a job id: %v (see %s)", err, p.logFile.Name())
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the purge command: %w", context.Cause(ctx))
	}
}

// wait waits for the purge command to end (it follows the job to its end)
// and returns what it used.
func (p *producerProc) wait(ctx context.Context) (Proc, error) {
	defer p.logFile.Close()
	var err error
	select {
	case err = <-p.exited:
	case <-ctx.Done():
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		err = <-p.exited
	}
	ps := p.cmd.ProcessState
	if ps == nil {
		return Proc{}, fmt.Errorf("waiting for the purge command: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	use := Proc{PID: ps.Pid(), CPUSeconds: (ps.UserTime() + ps.SystemTime()).Seconds(), PeakRSS: p.hwm}
	if !ps.Success() {
		return use, fmt.Errorf("the purge command: %s (see %s)", ps, p.logFile.Name())
	}
	return use, nil
}

// vmHWM is a live process's peak resident set ("VmHWM" in
// /proc/PID/status) in bytes, or 0 if unknown. The kernel's ru_maxrss of a
// child is no use here: it starts from the parent's high-water mark at the
// fork, and this process holds the emulator's data.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n * 1024
				}
			}
		}
	}
	return 0
}
