// Package jobs keeps imrecall's job records in Redis, outside asynq: who asked
// for what and why, the job's status, and exact, idempotent counts of its
// messages.
//
// asynq is at-least-once and trims its archive at 10,000 tasks, so a job's
// truth cannot live there. Instead every planned message has a state in a
// per-target Redis hash (one per group/topic or one-to-one conversation of a
// job), and every transition is one Lua script that moves the state and the
// job's counters together:
//
//	planned ("p") → sent n times ("s<n>") → recalled ("r") | dead-lettered ("d:<code>")
//	                                        | recalled, attribution unknown ("u")
//
// ("a<n>": sent n times, every answer heard.) "u" is a recall found after a
// send whose answer was lost (the worker died, the call timed out): the
// message is gone, but this job's call or someone before the job may have
// recalled it. It counts as recalled, and Counts.RecalledUnattributed says
// how many recalls are of that kind.
//
// The first terminal state wins; a redelivered task that reports a message
// again changes nothing. So planned = recalled + dead_lettered + pending holds
// at every instant, and Recount proves it from the per-message states.
//
// All keys of one job share the hash tag {<job id>}, so the scripts work on
// Redis Cluster.
package jobs
