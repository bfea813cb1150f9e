package bench

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/imrecall/imrecall/tim"
)

// RunScale runs one list-file job per size and prints, per size, what
// issue 17 sizes Redis and the processes by: Redis used_memory at its peak
// above the baseline per message, Redis bytes per message at rest once the
// job is done (used_memory, and MEMORY USAGE of the job's keys), the
// producer's and the workers' peak RSS (VmHWM), the wall time and the
// throttled calls.
func RunScale(ctx context.Context, c ScaleConfig, out, errOut io.Writer) error {
	if err := c.Validate(); err != nil {
		return err
	}
	o := c.e2e()
	results, err := runE2E(ctx, &o, errOut)
	if err != nil {
		return err
	}
	return report(&o, out, results, fmt.Sprintf("emulator and limiter cap %d calls/s per API, latency %s; %d workers, --concurrency %d %s",
		c.Cap, o.latency(), c.Workers, c.Concurrency, c.WorkerArgs), printListScaleTable)
}

// printListScaleTable prints the figures of RunScale, a row per size.
func printListScaleTable(w io.Writer, rs []Result) {
	cols := []string{"messages", "workers", "cap", "wall s", "floor s", "floor/wall", "group_msg_recall end to end (of cap)", "throttled",
		"Redis peak Δ B/msg", "Redis at rest B/msg", "job record B/msg", "producer peak RSS MiB", "worker peak RSS MiB"}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, r := range rs {
		g := r.APIs[tim.GroupMsgRecall.Name()]
		row := []any{r.Planned, r.Workers, r.Cap, r.WallSeconds, r.FloorSeconds, fmt.Sprintf("%.3f", r.FloorOverWall),
			fmt.Sprintf("%.1f (%.3f)", g.EndToEnd, g.EndToEndOfCap), r.Throttled, r.RedisPeakPerMessage, r.RedisJobPerMessage,
			r.JobRecordPerMessage, mib(r.Producer.PeakRSS), mib(r.WorkerPeakRSS)}
		cells := make([]string, len(row))
		for i, v := range row {
			cells[i] = fmt.Sprint(v)
			if f, ok := v.(float64); ok {
				cells[i] = fmt.Sprintf("%.1f", f)
			}
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}
