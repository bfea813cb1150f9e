package bench

import (
	"fmt"
	"io"
	"sort"

	"github.com/imrecall/imrecall/tim"
)

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func printE2ETables(w io.Writer, rs []Result) {
	gr, aw := tim.GroupMsgRecall.Name(), tim.AdminMsgWithdraw.Name()
	fmt.Fprintln(w, "| producer | workers | group msgs | 1:1 msgs | wall s | floor s | floor/wall | least calls | calls floor/wall | lead-in s | tail s | planning closed s | group_msg_recall end to end (of cap) | while busy (of cap) | steady (of cap) | first–last s | max_1s | admin_msgwithdraw end to end (of cap) | while busy (of cap) | steady (of cap) | first–last s | max_1s | throttled | seqs/group call |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		g, a := r.APIs[gr], r.APIs[aw]
		var throttled int64
		for _, x := range r.APIs {
			throttled += x.Throttled
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.1f | %.1f | %.3f | %d | %.3f | %.2f | %.2f | %.1f | %.1f (%.3f) | %.1f (%.3f) | %s | %d–%d | %d | %.1f (%.3f) | %.1f (%.3f) | %s | %d–%d | %d | %d | %.2f |\n",
			r.Mode, r.Workers, r.GroupMessages, r.C2CMessages, r.WallSeconds, r.FloorSeconds, r.FloorOverWall, r.LeastGroupCalls, r.CallFloorOverWall, r.LeadInSeconds, r.TailSeconds, r.PlanningSeconds,
			g.EndToEnd, g.EndToEndOfCap, g.PerSecond, g.OfCap, g.steady(), g.FirstSecond, g.LastSecond, g.Max1s,
			a.EndToEnd, a.EndToEndOfCap, a.PerSecond, a.OfCap, a.steady(), a.FirstSecond, a.LastSecond, a.Max1s, throttled, r.SeqsPerGroupCall)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| producer | workers | API calls | worker CPU s/1000 calls | Redis CPU s/1000 | emulator CPU s/1000 | worker peak RSS MiB | producer peak RSS MiB | Redis B/msg after planning | job record B/msg | queue B/queued msg | Redis peak MiB (Δ) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %s | %d | %d | %.3f | %.3f | %.3f | %.1f | %.1f | %.0f | %.1f | %.0f | %.1f |\n",
			r.Mode, r.Workers, r.Calls, r.WorkerCPUPer1000, r.RedisCPUPer1000, r.BenchCPUPer1000, mib(r.WorkerPeakRSS), mib(r.Producer.PeakRSS),
			r.RedisPerPlanned, r.JobRecordPerMessage, r.RedisQueuePerQueued, mib(r.RedisPeak-r.RedisBaseline))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| producer | workers | API | accepted | active s | first–last s | calls/s | of cap | steady | max_1s | throttled |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		for _, api := range sortedAPIs(r.APIs) {
			a := r.APIs[api]
			fmt.Fprintf(w, "| %s | %d | %s | %d | %d | %d–%d | %.1f | %.3f | %s | %d | %d |\n",
				r.Mode, r.Workers, api, a.Accepted, a.ActiveSeconds, a.FirstSecond, a.LastSecond, a.PerSecond, a.OfCap, a.steady(), a.Max1s, a.Throttled)
		}
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		if r.Serve != nil {
			fmt.Fprintf(w, "%s, %d workers: index fed before the clock: %d callbacks in %.1f s, %.0f Redis bytes per message; serve %.1f CPU s, peak RSS %.1f MiB\n",
				r.Mode, r.Workers, r.IndexCallbacks, r.IndexSeconds, r.IndexBytesPerMessage, r.Serve.CPUSeconds, mib(r.Serve.PeakRSS))
		}
		if v := r.Verify; v != nil {
			fmt.Fprintf(w, "%s, %d workers: verify in %.1f s (exit %d): %d history calls for %d planned (%.4f per message); %d verified, %d gone, %d still visible, residue %d\n",
				r.Mode, r.Workers, v.Seconds, v.ExitCode, v.HistoryCalls, v.Planned, v.CallsPerPlanned, v.Verified, v.Gone, v.StillVisible, v.Residue)
			for _, api := range sortedAPIs(v.APIs) {
				a := v.APIs[api]
				fmt.Fprintf(w, "  verify %s: %d calls, %.1f/s over verify's wall time (%.3f of cap), %.1f/s while busy (%.3f), max_1s %d, throttled %d\n",
					api, a.Accepted, a.EndToEnd, a.EndToEndOfCap, a.PerSecond, a.OfCap, a.Max1s, a.Throttled)
			}
		}
		fmt.Fprintf(w, "%s, %d workers: job id printed at %.2f s; planning closed at %.1f s with %d planned, %d pending; job %s: %d recalled, %d dead-lettered, %d left; load %s → %s\n",
			r.Mode, r.Workers, r.ProducerSeconds, r.PlanningSeconds, r.PlannedAtPlanningEnd, r.PendingAtPlanningEnd, r.Status, r.Recalled, r.DeadLettered, r.Left, r.LoadAvgBefore, r.LoadAvgAfter)
	}
}

func printScaleTable(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| messages | workers | wall s | floor s | floor/wall | group_msg_recall end to end (of cap) | planning s | producer peak RSS MiB | worker peak RSS MiB | Redis used_memory peak MiB (Δ) | job record B/msg | worker CPU s/1000 calls |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		g := r.APIs[tim.GroupMsgRecall.Name()]
		fmt.Fprintf(w, "| %d | %d | %.1f | %.1f | %.3f | %.1f (%.3f) | %.1f | %.1f | %.1f | %.1f (%.1f) | %.0f | %.3f |\n",
			r.GroupMessages, r.Workers, r.WallSeconds, r.FloorSeconds, r.FloorOverWall, g.EndToEnd, g.EndToEndOfCap, r.PlanningSeconds,
			mib(r.Producer.PeakRSS), mib(r.WorkerPeakRSS), mib(r.RedisPeak), mib(r.RedisPeak-r.RedisBaseline), r.JobRecordPerMessage, r.WorkerCPUPer1000)
	}
}

func sortedAPIs(m map[string]API) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
