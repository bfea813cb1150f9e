// Package worker turns queued recall tasks into Tencent IM API calls and
// accounts for every message.
//
// Server (server.go) is a worker process's runtime: the lanes of asynq
// servers (group recall, one-to-one withdraw, discovery), their queues and
// slots, asynq's configuration, the error handler of archived tasks, and one
// logging middleware per attempt (job_id, task_id, attempt, outcome).
//
// A message's life in this package, each step one named place:
//   - task: Handler.HandleGroupRecall / HandleC2CWithdraw decode a task
//     (1–10 seqs of one group, or one MsgKey) into a send;
//   - admit: Handler.admit drops what a cancelled job no longer wants,
//     parks a paused job's task, leaves out terminal messages;
//   - limit: Handler.run reserves the call's slot from Config.Limiter (the
//     shared cap) a lead ahead, records the send (jobs.Store.BeginGroup)
//     while the slot approaches, then waits for the slot — one wait per call;
//   - call: the IM client's recall call (RecallGroup, Withdraw), paced;
//   - outcome: OutcomeOf classifies each answer code (recalled, gone,
//     throttled, retry, dead-letter, app-wide), in one table-tested function;
//   - record: Handler.record writes each terminal outcome to the job store
//     at once; what is left is called again after a back-off, up to
//     Config.MaxAttempts calls per message.
//
// Throttle codes use no attempt (the limiter paces every process). Permanent
// codes are dead-lettered at once. App-wide codes pause the job through the
// breaker (breaker.go) and dead-letter nothing. The asynq task itself
// succeeds once every message is terminal: asynq's retry set is used only
// when Redis or the process fails, or when a task is snoozed.
//
// Delivery is at least once. A message whose earlier call may have been
// answered without our hearing it (a crash, a timeout) and that now reports
// "not there" (OutcomeGone) is checked before it is dead-lettered: recalled
// in the group's history (IsPlaceMsg 2), or 20023 for a one-to-one message,
// means our earlier call did it.
package worker
