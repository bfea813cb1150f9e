package worker

import "context"

// IM is what the worker needs of the Tencent IM client. The recall calls
// (RecallGroup, Withdraw) are made once the send path has waited on
// Config.Limiter, and must not wait again; RecalledSeqs (history reads)
// waits on the client's own gate.
type IM interface {
	// RecallGroup calls group_msg_recall and returns the RetCode of each seq
	// (RecallRetList). A non-nil error means no per-seq answer: a top-level
	// ErrorCode, a transport failure or a timeout.
	RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error)
	// Withdraw calls admin_msgwithdraw; nil means recalled.
	Withdraw(ctx context.Context, from, to, msgKey string) error
	// RecalledSeqs reports which of a group's seqs the history shows
	// recalled (WithRecalledMsg, IsPlaceMsg 2), in as few pulls as their
	// spread allows; a seq the history does not hold is not recalled.
	RecalledSeqs(ctx context.Context, group, topic string, seqs []int64) (map[int64]bool, error)
}
