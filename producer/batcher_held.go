package producer

import "github.com/imrecall/imrecall/jobs"

// held returns the highest group seq of t that the batcher holds (not yet
// planned, or planned but not yet queued) and how many it holds. A scan's
// checkpoint must not pass it: a scan resumed after a crash reads from
// there again, and planning drops what was planned already.
func (b *Batcher) held(t jobs.Target) (maxSeq int64, n int) {
	for _, list := range [][]int64{b.raw[t], b.ready[t]} {
		for _, s := range list {
			maxSeq = max(maxSeq, s)
			n++
		}
	}
	return maxSeq, n
}
