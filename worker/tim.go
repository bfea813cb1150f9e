package worker

import (
	"context"
	"errors"
	"slices"

	"github.com/imrecall/imrecall/tim"
)

// TIM adapts a *tim.Client to IM. Its recall calls go through C.Paced():
// the send path has already waited on Config.Limiter for them (a Handler
// without a Limiter lets them wait on C's Gate instead). Its history reads
// wait on C's Gate.
type TIM struct {
	C *tim.Client

	gated bool // the handler has no Limiter: recall calls wait on C's Gate
}

// recaller is the client for a recall call.
func (t TIM) recaller() *tim.Client {
	if t.gated {
		return t.C
	}
	return t.C.Paced()
}

var _ IM = TIM{}

// RecallGroup implements IM. An answer without a result for some seqs
// (tim.ErrIncompleteResult) still answers the others: their codes are
// returned and the seqs left out are missing from the map, which the
// handler takes for unanswered.
func (t TIM) RecallGroup(ctx context.Context, group, topic string, seqs []int64) (map[int64]int, error) {
	res, err := t.recaller().RecallGroup(ctx, group, topic, seqs)
	if err != nil && !errors.Is(err, tim.ErrIncompleteResult) {
		return nil, err
	}
	codes := make(map[int64]int, len(res))
	for _, r := range res {
		if errors.Is(err, tim.ErrIncompleteResult) && r.RetCode == tim.RetCodeMissing {
			continue
		}
		codes[r.MsgSeq] = r.RetCode
	}
	return codes, nil
}

// Withdraw implements IM.
func (t TIM) Withdraw(ctx context.Context, from, to, msgKey string) error {
	_, err := t.recaller().AdminMsgWithdraw(ctx, tim.AdminMsgWithdrawRequest{FromAccount: from, ToAccount: to, MsgKey: msgKey})
	return err
}

// RecalledSeqs reports which of seqs the group's history shows recalled
// (IsPlaceMsg 2), in pulls of up to 20 messages ending at the highest seq
// not yet covered: one pull for seqs that lie within 20 of each other, as a
// task's usually do. A pull covers [low, s], where low is the lowest seq of
// its answer (1 when the answer holds fewer than asked and is not cut
// short, i.e. it reached the start of the history).
func (t TIM) RecalledSeqs(ctx context.Context, group, topic string, seqs []int64) (map[int64]bool, error) {
	left := slices.Sorted(slices.Values(seqs))
	out := make(map[int64]bool, len(seqs))
	for len(left) > 0 {
		s := left[len(left)-1]
		resp, err := t.C.GroupMsgGetSimple(ctx, tim.GroupMsgGetSimpleRequest{
			GroupID: group, TopicID: topic, ReqMsgSeq: s, ReqMsgNumber: tim.MaxGetSimpleMsgs, WithRecalledMsg: 1,
		})
		if err != nil {
			return nil, err
		}
		low := s
		for _, m := range resp.RspMsgList {
			if m.MsgSeq <= s {
				low = min(low, m.MsgSeq)
				if m.IsPlaceMsg == tim.PlaceMsgRecalled {
					out[m.MsgSeq] = true
				}
			}
		}
		if len(resp.RspMsgList) < tim.MaxGetSimpleMsgs && resp.IsFinished != tim.FinishedPartial {
			low = 1
		}
		for len(left) > 0 && left[len(left)-1] >= low {
			left = left[:len(left)-1]
		}
	}
	return out, nil
}
