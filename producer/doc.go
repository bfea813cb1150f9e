// Package producer plans recall jobs: it turns what a person asks for (a list
// of messages, a user to purge, a spam wave in some groups) into planned
// messages in the job store and recall tasks on the asynq queues.
//
// Planning goes through the job store first, so duplicates are removed (a
// message planned twice is enqueued once) and re-running a planner after a
// crash enqueues nothing twice. Group seqs are chunked per group (or topic)
// into calls of 10 wherever 10 are left.
package producer
