// Package imrecall bulk-recalls Tencent Cloud IM messages: a Client plans,
// creates and follows recall and purge jobs that workers (package worker)
// run from Redis-backed asynq queues at the API's rate cap, shared by every
// process through package limiter.
//
// The CLI (cmd/imrecall), the HTTP API (package api), schedules and any Go
// program are adapters over the Client: it alone decides whether a user
// purge reads the callback index or scans histories, runs the dry run
// (Client.Plan), and asks for confirmation (*ConfirmationRequired, which the
// CLI turns into a prompt and the API into a 409).
//
// # Requests
//
// Each kind of job has its typed request: GroupRecall, C2CRecall,
// ListRecall, UserPurge and GroupPurge. Kind names the job record's kind;
// Validate returns a *FieldError naming the request's field by its JSON
// name (the CLI maps it to its flag with a table, the API returns it as
// is). RequestOf turns the stored and HTTP form (producer.JobRequest, what a
// schedule holds) into a typed request.
//
// # A message's life
//
// Follow one group message, seq 42 of group G, from a request to its
// record. Each step happens in one named place:
//
//  1. Plan. Client.Create (client.go) checks the request, decides the
//     source (Client.prepareUser: index if it covers the range, else scan)
//     and the confirmation, then calls producer.NewJob (producer/job.go),
//     which creates the job record (jobs.Store.Create) and runs the plan
//     function (Client.planFunc). For listed messages that is
//     producer.Batcher.AddMessage (producer/enqueue.go); for a purge by
//     scan, producer.EnqueueScans queues discovery tasks whose handler
//     (producer.NewDiscoverHandler, producer/scan.go) reads the history and
//     feeds the same Batcher. The Batcher plans seq 42 in the job's Lua
//     plan script (journaled under a per-call token, jobs/journal.go) and
//     buffers it until 10 seqs of G make one call. With a bound on the
//     job's queued work (Config.Backlog, jobs.Spec.Backlog), it first waits
//     while the job has that many messages pending (producer/backlog.go).
//  2. Task. producer.Batcher.enqueueGroup builds a tasks.GroupRecall
//     payload (tasks/tasks.go, NewGroupRecallTask: at most 10 seqs, a
//     deterministic task id) and enqueues it on the job's queue.
//  3. Limit. worker.Handler.HandleGroupRecall (worker/handler.go) decodes
//     the task and hands it to worker.Handler.run, the one attempt loop of
//     both APIs, which admits the seqs still pending and then reserves a
//     call slot from its Limiter (worker.Config.Limiter, which is
//     limiter.AppGate from limiter.Limiter.ForApp, limiter/limiter.go):
//     Reserve books a slot of the shared cap a lead ahead.
//  4. Call. While the slot approaches, jobs.Store.BeginGroup records the
//     send; at the slot (Slot.Wait) the worker's IM adapter calls
//     tim.Client.GroupMsgRecall through tim.Client.Paced (tim/group.go):
//     the group_msg_recall call, which waits on no second gate.
//  5. Outcome. worker.OutcomeOf (worker/handler.go, table-tested) turns
//     each seq's result code into recalled, already gone, retry, dead
//     letter or app-wide; worker.Handler.answered applies it per seq, and
//     worker.Handler.callFailed does so for a call that failed whole.
//     Retries wait out worker.RetryDelay; an app-wide code trips the
//     breaker and pauses the job.
//  6. Record. worker.Handler.record writes each outcome with
//     jobs.Store.Record (jobs/store.go): counts, dead letters by code, and
//     the job's end. Client.Wait and Client.Report read it back.
//
// Cancel, Pause, Resume and Requeue act on the same record on behalf of an
// actor; every change is in the audit log (jobs.Store.AuditLog).
package imrecall
