package bench

import (
	"fmt"

	"github.com/imrecall/imrecall/emulator"
)

// API is what the emulator served on one API during a run.
type API struct {
	Accepted  int64 `json:"accepted"`
	Throttled int64 `json:"throttled"`
	Max1s     int64 `json:"max_1s"`
	// EmulatorLateMaxMs is the longest a call waited on the emulator's host
	// before the emulator counted it, at its arrival (a sign of load).
	EmulatorLateMaxMs float64 `json:"emulator_late_max_ms,omitempty"`
	// ActiveSeconds counts the seconds with at least one accepted call.
	ActiveSeconds int `json:"active_seconds"`
	// FirstSecond and LastSecond are the first and last active second,
	// counted from the start of the purge command.
	FirstSecond int `json:"first_second"`
	LastSecond  int `json:"last_second"`
	// EndToEnd is Accepted ÷ the run's wall time (purge command started →
	// job finished), EndToEndOfCap that ÷ the cap: the API's use of the cap
	// over the whole job, waiting for discovery included.
	EndToEnd      float64 `json:"end_to_end_calls_per_second"`
	EndToEndOfCap float64 `json:"end_to_end_of_cap"`
	// PerSecond is Accepted ÷ ActiveSeconds; OfCap that ÷ the cap: the rate
	// while the API had work.
	PerSecond float64 `json:"calls_per_second"`
	OfCap     float64 `json:"of_cap"`
	// Steady is the mean of the seconds from the first to the last active
	// one, both left out (they are partial): the rate while the API is busy.
	Steady      float64 `json:"steady_calls_per_second"`
	SteadyOfCap float64 `json:"steady_of_cap"`
	// Series is the accepted calls in each second from the start of the
	// purge command.
	Series []int64 `json:"per_second"`
}

// steady formats the steady rate and its share of the cap, "–" when the
// API was busy for fewer than three seconds.
func (a API) steady() string {
	if a.LastSecond-a.FirstSecond < 2 {
		return "–"
	}
	return fmt.Sprintf("%.1f (%.3f)", a.Steady, a.SteadyOfCap)
}

// Proc is one child process's resource use.
type Proc struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"` // user + system
	PeakRSS    int64   `json:"peak_rss_bytes"`
}

// Result is one run of bench e2e.
type Result struct {
	Mode        string `json:"mode"` // "purge user" or "purge group"
	Workers     int    `json:"workers"`
	Concurrency int    `json:"concurrency"`
	WorkerArgs  string `json:"worker_args,omitempty"`
	Cap         int    `json:"cap"`
	Groups      int    `json:"groups"`
	Targets     int    `json:"targets"` // group histories and topics holding the spammer's messages

	// Ground truth: the spammer's messages before the run, and those left after.
	GroupMessages int `json:"group_messages"`
	C2CMessages   int `json:"c2c_messages"`
	Left          int `json:"left"`

	JobID        string `json:"job_id"`
	Status       string `json:"status"`
	Planned      int64  `json:"planned"`
	Recalled     int64  `json:"recalled"`
	DeadLettered int64  `json:"dead_lettered"`

	WallSeconds float64 `json:"wall_seconds"`
	// FloorSeconds is the floor at 10 seqs a call: group messages ÷ 10 ÷
	// cap, or one-to-one messages ÷ cap if longer.
	FloorSeconds  float64 `json:"floor_seconds"`
	FloorOverWall float64 `json:"floor_over_wall"`
	// LeastGroupCalls is the fewest group calls that recall the spammer's
	// messages, Σ⌈n ÷ 10⌉ over the histories (a call recalls one
	// history's seqs); CallFloorSeconds is the physical floor they set,
	// LeastGroupCalls ÷ cap (or one-to-one messages ÷ cap if longer).
	LeastGroupCalls   int     `json:"least_group_calls"`
	CallFloorSeconds  float64 `json:"call_floor_seconds"`
	CallFloorOverWall float64 `json:"call_floor_over_wall"`
	// LeadInSeconds is the purge command's start → the first accepted call
	// (of either API): the command's start, its check of the input, the
	// first tasks queued and picked up. TailSeconds is the last accepted
	// call → the job finished (its answer and record). The rest of the wall
	// time is the sending, which the limiter paces.
	LeadInSeconds   float64 `json:"lead_in_seconds"`
	TailSeconds     float64 `json:"tail_seconds"`
	ProducerSeconds float64 `json:"producer_seconds"` // until the purge command printed the job id
	PlanningSeconds float64 `json:"planning_seconds"` // until discovery closed the job's planning

	APIs             map[string]API `json:"apis"`
	Calls            int64          `json:"calls"`     // accepted calls of every API
	Throttled        int64          `json:"throttled"` // calls the emulator throttled, every API
	SeqsPerGroupCall float64        `json:"seqs_per_group_call"`

	WorkerProcs          []Proc  `json:"worker_processes"`
	WorkerCPUPer1000     float64 `json:"worker_cpu_seconds_per_1000_calls"`
	RedisCPUPer1000      float64 `json:"redis_cpu_seconds_per_1000_calls"`
	BenchCPUPer1000      float64 `json:"bench_cpu_seconds_per_1000_calls"` // this process: the emulator
	WorkerPeakRSS        int64   `json:"worker_peak_rss_bytes"`            // the largest of the workers'
	Producer             Proc    `json:"producer"`
	RedisBaseline        int64   `json:"redis_baseline_bytes"`
	RedisAfterPlanning   int64   `json:"redis_after_planning_bytes"`
	PlannedAtPlanningEnd int64   `json:"planned_at_planning_end"`
	PendingAtPlanningEnd int64   `json:"pending_at_planning_end"`
	RedisPeak            int64   `json:"redis_peak_bytes"` // the largest used_memory sampled (every 200 ms)
	RedisAfterJob        int64   `json:"redis_after_job_bytes"`
	RedisPerPlanned      float64 `json:"redis_bytes_per_message_after_planning"`
	RedisPeakPerMessage  float64 `json:"redis_peak_bytes_per_message"`       // (peak − baseline) ÷ planned
	RedisJobPerMessage   float64 `json:"redis_job_record_bytes_per_message"` // used_memory after the job − baseline, ÷ planned
	JobRecordBytes       int64   `json:"job_record_bytes"`                   // MEMORY USAGE of the job's keys after the job
	JobRecordPerMessage  float64 `json:"job_record_memory_usage_bytes_per_message"`
	RedisQueuePerQueued  float64 `json:"redis_queue_bytes_per_queued_message,omitempty"`
	// --via index: the callbacks replayed into imrecall serve before the
	// clock starts, how long they took, the index's Redis bytes per
	// message, and serve's own use.
	IndexCallbacks       int     `json:"index_callbacks,omitempty"`
	IndexSeconds         float64 `json:"index_seconds,omitempty"`
	IndexBytesPerMessage float64 `json:"index_bytes_per_message,omitempty"`
	Serve                *Proc   `json:"serve,omitempty"`
	// Verify is "imrecall verify JOB" after the job (--verify).
	Verify        *Verification `json:"verify,omitempty"`
	LoadAvgBefore string        `json:"loadavg_before,omitempty"`
	LoadAvgAfter  string        `json:"loadavg_after,omitempty"`
}

// Verification is a run of "imrecall verify JOB --json" after the job.
type Verification struct {
	Seconds  float64 `json:"seconds"`
	ExitCode int     `json:"exit_code"`
	// What verify printed.
	Planned      int64 `json:"planned"`
	Verified     int64 `json:"verified"`
	Gone         int64 `json:"gone"`
	StillVisible int64 `json:"still_visible"`
	Residue      int64 `json:"residue"`
	Passed       bool  `json:"passed"`
	HistoryCalls int64 `json:"history_calls"`
	// CallsPerPlanned is HistoryCalls ÷ Planned (the aim: at most 1/20
	// when the job's histories hold mostly its messages).
	CallsPerPlanned float64 `json:"history_calls_per_planned"`
	// APIs is what the emulator accepted during verify, per API; their
	// calls/s are accepted ÷ verify's wall time and ÷ its busy seconds.
	APIs map[string]API `json:"apis"`
}

// apiFigures turns the emulator's counts per API into rates over wall
// seconds and against the cap.
func apiFigures(st map[string]emulator.APIStats, wall float64, limit int) map[string]API {
	out := map[string]API{}
	for api, s := range st {
		a := API{Accepted: s.Accepted, Throttled: s.Throttled, Max1s: s.Max1s, EmulatorLateMaxMs: s.HandledLateMaxMs,
			FirstSecond: -1, LastSecond: -1, Series: s.PerSecond}
		for i, n := range s.PerSecond {
			if n > 0 {
				a.ActiveSeconds++
				if a.FirstSecond < 0 {
					a.FirstSecond = i
				}
				a.LastSecond = i
			}
		}
		if wall > 0 {
			a.EndToEnd = float64(a.Accepted) / wall
			a.EndToEndOfCap = a.EndToEnd / float64(limit)
		}
		if a.ActiveSeconds > 0 {
			a.PerSecond = float64(a.Accepted) / float64(a.ActiveSeconds)
			a.OfCap = a.PerSecond / float64(limit)
		}
		if a.LastSecond-a.FirstSecond >= 2 {
			a.Steady = steadyRate(s.PerSecond[a.FirstSecond : a.LastSecond+1])
			a.SteadyOfCap = a.Steady / float64(limit)
		}
		out[api] = a
	}
	return out
}

// steadyRate averages the accepted calls per second, leaving out the first
// and the last second (processes start and stop).
func steadyRate(series []int64) float64 {
	if len(series) < 3 {
		var sum int64
		for _, n := range series {
			sum += n
		}
		return float64(sum) / float64(max(len(series), 1))
	}
	mid := series[1 : len(series)-1]
	var sum int64
	for _, n := range mid {
		sum += n
	}
	return float64(sum) / float64(len(mid))
}
