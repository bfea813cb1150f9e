// Package emulator is an in-memory Tencent Cloud IM REST API server, faithful
// to the documented behaviour of the APIs imrecall uses, so that code that
// passes against it would pass against the real service.
//
// It checks every call as the real service does (POST, sdkappid, the App
// admin identifier, a UserSig verified against the secret key, random,
// contenttype, a JSON body) and answers API-level errors with HTTP 200 and
// ActionStatus/ErrorCode/ErrorInfo. It enforces the rate cap per API over any
// sliding second (60007 past it, with no effect), each call counted when it
// arrived (the kernel's receive time, see ArrivalListener), injects faults on request
// (error codes per call or per seq, HTTP 502, hung calls) and counts what it
// served (GET /emulator/stats) so benchmarks measure against it.
//
// The two sides of a one-to-one chat can hold different messages, as
// documented: delete_c2c_msg_ramble removes messages from one side only, and
// a sendmsg with SyncOtherMachine 2 never reaches the sender's side. A send
// whose ForbidCallbackControl names ForbidAfterSendMsgCallback delivers no
// after-send callback (the callback index never hears of it).
//
// Its wire structs are its own, so that it catches the client's mistakes.
//
// Where the documentation is silent the emulator makes a documented choice:
//   - group_msg_get_simple fills ReqMsgNumber messages walking back from
//     ReqMsgSeq, skipping recalled ones unless WithRecalledMsg is 1;
//   - a malformed body is 90001 on openim APIs (as documented there) and the
//     public 60003 elsewhere;
//   - a TopicId on a group without that topic is 10004 (parameter invalid).
package emulator
