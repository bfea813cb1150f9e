package worker

import (
	"context"

	"github.com/imrecall/imrecall/tim"
)

// IM is what the worker needs of the Tencent IM client. Every method's call
// waits on the shared rate limiter before it is sent.
type IM interface {
	// Await reserves one call of api with the shared rate limiter and
	// returns shortly before its slot, with a context that carries the slot
	// to the next call of api made with it; that call sleeps out the rest of
	// the slot (and reserves again only if it comes too late after it). The
	// handler records the send between the two, so that a worker stopped
	// while it waits for its share of the cap has recorded no send, and the
	// record's Redis round trip runs while the slot approaches. Its error is
	// the one the call would have returned from the limiter.
	Await(ctx context.Context, api tim.API) (context.Context, error)
	// RecallGroup calls group_msg_recall and returns the RetCode of each seq
	// (RecallRetList). A non-nil error means no per-seq answer: a top-level
	// ErrorCode, a transport failure or a timeout.
	RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error)
	// Withdraw calls admin_msgwithdraw; nil means recalled.
	Withdraw(ctx context.Context, from, to, msgKey string) error
	// GroupRecalled reports whether a group message is recalled (history pull
	// with WithRecalledMsg, IsPlaceMsg 2). found is false when the history
	// has no such seq.
	GroupRecalled(ctx context.Context, group, topic string, seq int64) (recalled, found bool, err error)
}
