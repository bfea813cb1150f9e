package tim

import (
	"context"
	"fmt"
	"iter"
)

// GroupMsgPages pages a group's (or topic's) history backwards with
// group_msg_get_simple: first the messages with seq ≤ req.ReqMsgSeq (0: the
// newest), then, page by page, those below the smallest seq seen so far. It
// yields each non-empty page, newest first, and ends after seq 1 or an empty
// page. An error is yielded once, as the last element. ReqMsgNumber 0 means
// 20. Breaking out of the loop stops the paging.
//
// It always asks WithRecalledMsg 1: a page is a window of seqs, and without
// recalled messages a window of them comes back empty, which would end the
// history early. Callers skip IsPlaceMsg ≠ 0 themselves.
func (c *Client) GroupMsgPages(ctx context.Context, req GroupMsgGetSimpleRequest) iter.Seq2[*GroupMsgGetSimpleResponse, error] {
	if req.ReqMsgNumber == 0 {
		req.ReqMsgNumber = MaxGetSimpleMsgs
	}
	req.WithRecalledMsg = 1
	return func(yield func(*GroupMsgGetSimpleResponse, error) bool) {
		for {
			resp, err := c.GroupMsgGetSimple(ctx, req)
			if err != nil {
				yield(nil, err)
				return
			}
			if len(resp.RspMsgList) == 0 {
				return
			}
			low := resp.RspMsgList[0].MsgSeq
			for _, m := range resp.RspMsgList {
				low = min(low, m.MsgSeq)
			}
			if req.ReqMsgSeq != 0 && low > req.ReqMsgSeq {
				yield(nil, &Error{API: GroupMsgGetSimple.Name(), HTTPStatus: 200, Err: fmt.Errorf(
					"%w: asked for seqs ≤ %d, got seq %d", ErrMalformedResponse, req.ReqMsgSeq, low)})
				return
			}
			if !yield(resp, nil) || low <= 1 {
				return
			}
			req.ReqMsgSeq = low - 1
		}
	}
}

// RoamMsgPages pages one-to-one history with admin_getroammsg until the
// answer says Complete, continuing each time with MaxTime = LastMsgTime and
// the returned LastMsgKey. It yields every answer; an error is yielded once,
// as the last element. MaxCnt 0 means 100.
func (c *Client) RoamMsgPages(ctx context.Context, req AdminGetRoamMsgRequest) iter.Seq2[*AdminGetRoamMsgResponse, error] {
	if req.MaxCnt == 0 {
		req.MaxCnt = 100
	}
	return func(yield func(*AdminGetRoamMsgResponse, error) bool) {
		for {
			resp, err := c.AdminGetRoamMsg(ctx, req)
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(resp, nil) || resp.Complete == 1 {
				return
			}
			key := string(resp.LastMsgKey)
			if key == "" || (key == req.LastMsgKey && resp.LastMsgTime == req.MaxTime) {
				yield(nil, &Error{API: AdminGetRoamMsg.Name(), HTTPStatus: 200, Err: fmt.Errorf(
					"%w: Complete=0 but LastMsgKey %q and LastMsgTime %d do not advance", ErrMalformedResponse, key, resp.LastMsgTime)})
				return
			}
			req.MaxTime, req.LastMsgKey = resp.LastMsgTime, key
		}
	}
}

// JoinedGroupPages pages get_joined_group_list by Offset until TotalCount
// groups were seen or a page comes back empty. It yields every non-empty
// page; an error is yielded once, as the last element. Limit 0 means 1000.
func (c *Client) JoinedGroupPages(ctx context.Context, req GetJoinedGroupListRequest) iter.Seq2[*GetJoinedGroupListResponse, error] {
	if req.Limit == 0 {
		req.Limit = 1000
	}
	return func(yield func(*GetJoinedGroupListResponse, error) bool) {
		for {
			resp, err := c.GetJoinedGroupList(ctx, req)
			if err != nil {
				yield(nil, err)
				return
			}
			if len(resp.GroupIDList) == 0 || !yield(resp, nil) {
				return
			}
			req.Offset += len(resp.GroupIDList)
			if req.Offset >= resp.TotalCount {
				return
			}
		}
	}
}
