// Package worker turns queued recall tasks into Tencent IM API calls and
// accounts for every message.
//
// A task carries 1–10 seqs of one group (or one MsgKey). The handler, in one
// run, calls the API (every call waits on the shared limiter inside the IM
// client), records each message's terminal outcome in the job store at once,
// and retries only the messages that failed with a transient code, with
// exponential back-off and jitter, up to Config.MaxAttempts calls per message.
// Throttle codes do not use an attempt (the limiter pauses the API for every
// process). Permanent codes are dead-lettered at once. The asynq task itself
// succeeds once every message is terminal: asynq's retry set is used only when
// Redis or the process fails, or when a paused job snoozes its tasks.
//
// Delivery is at least once. A message whose earlier call may have been
// answered without our hearing it (a crash, a timeout) and that now reports
// 10030 is checked against the group's history before it is dead-lettered:
// recalled (IsPlaceMsg 2) means our earlier call did it.
package worker
