package bench

// The long help of the bench subcommands ("imrecall bench ... --help"): what
// each harness does and reports. cmd/imrecall shows them as they are.
const (
	// LimiterHelp is the help of "imrecall bench limiter".
	LimiterHelp = `Starts the emulator in this process (strict cap per API, latency 20–80 ms) and, unless --redis is
given, a private redis-server on a free port; then for each mode and each P runs P child processes
of G goroutines each calling the API through the IM client for --duration, and prints accepted
calls/s and efficiency (accepted/s ÷ cap) over the run (first and last second left out) and after
the warm-up (from the first second no call granted during a child's start-up can reach: its first
grant + 1 s of warm-up + 0.75 s booked ahead + 1 s + the longest bound a warm slot holds; "n/a" when the run is too short),
the emulator's max_1s and throttled calls, and (imrecall mode) the slots the limiters gave up as
late, all APIs of the run together.
Modes: imrecall (this project's Redis limiter), xrate (golang.org/x/time/rate at the cap in each
process), redis_rate (go-redis/redis_rate PerSecond(cap), sleeping RetryAfter).
In imrecall mode each call takes the worker's send path: the client's Await reserves the slot, one
Redis write stands for the send's record (the worker's BeginGroup), then the call waits out the slot.
--redis-latency D puts a proxy (internal/redisproxy) between every child process and Redis that
delays each direction by D, as a Redis a round trip of 2·D away would.`
	// E2EHelp is the help of "imrecall bench e2e".
	E2EHelp = `Runs the production path end to end on one machine and measures it against the physical floor.

For each run it starts a private redis-server on a free port (or uses --redis, which must be a Redis
dedicated to the bench: asynq's queues are not prefixed), the IM emulator in this process over HTTP
(strict cap per API, --latency), seeded with a spammer who sent --group-messages messages over
--groups groups and --c2c-messages one-to-one messages to --peers peers; then W worker processes
(this binary, "imrecall worker") and "imrecall purge user --user SPAMMER --peers ... --yes" (this
binary again), and waits for the job to finish. It then checks against the emulator that none of
the spammer's messages remain, stops the workers, and reports per run:

  - calls/s per API against the cap: end to end (the emulator's accepted calls ÷ the wall time),
    while busy (÷ the seconds in which it accepted any) and steady (the busy seconds without the
    first and the last); the most it accepted in any sliding second (max_1s); the calls it throttled;
  - seqs per group call: group messages recalled ÷ group_msg_recall calls (10 at best);
  - wall time (purge command started → job finished) against the floor: group messages ÷ 10 ÷ cap,
    one-to-one messages ÷ cap, the larger of the two (the APIs run in parallel); floor/wall is the
    share of the cap the whole pipeline achieved, discovery included; and against the physical
    floor the data sets: the least group calls (⌈n ÷ 10⌉ per history, as a call recalls the seqs
    of one history) ÷ cap ("calls floor/wall"), which 10 seqs a call can only reach when every
    history holds a multiple of 10;
  - worker CPU (user+sys of all worker processes) per 1,000 API calls, and Redis CPU likewise;
  - Redis memory: INFO used_memory right after planning closed, minus the baseline, ÷ the messages
    planned by then; what the job record keeps per message after the job; the peak;
  - the peak RSS (VmHWM) of the purge command (the producer, run with --wait) and of each worker;
  - with --verify, "imrecall verify JOB --json" (this binary) after the job: its time, history calls
    (and per planned message: at most 1 per 20 is the aim), the calls per API and per second against
    the cap, and what it found (verified, gone, still visible, residue).

--via index starts "imrecall serve", has the emulator post the after-send callback of every message
it holds to it (before the clock starts: the index is kept as messages are sent), and purges with
"purge user --source index": no history scan; the producer plans the messages of the index whose
sender the history confirms (one history call per page of 20 seqs, one read per one-to-one peer).
--via file makes the same job with "imrecall recall file" of a list of the spammer's messages in time
order (taken from the emulator, as a callback log would hold them).

--scale SIZES instead runs "imrecall purge group --group ... --sender SPAMMER" for group purges of each
size, and prints time and memory per size: producer and worker peak RSS stay flat while time and
Redis memory grow with the messages.

--redis-latency D puts a proxy (internal/redisproxy) between every child process (workers, the purge
command, serve) and Redis that delays each direction by D, as a Redis a round trip of 2·D away would;
the bench's own reads of Redis (progress, memory) go direct. Workers need more --concurrency as the
round trip grows (docs/REDIS.md).

Child processes get SIGTERM when the bench ends or is interrupted (Ctrl-C), SIGKILL if they linger.
Linux: peak RSS and this process's CPU are read from /proc.`
	// ScaleHelp is the help of "imrecall bench scale".
	ScaleHelp = `For each size, recalls a list file of that many group messages end to end ("imrecall recall file", this
binary, and --workers worker processes) against the emulator in this process, with a fresh private
redis-server (or --redis, dedicated to the bench). The emulator's cap and the workers' limiter cap
are both --cap calls/s per API, an explicit number (a raised cap makes 10^7 messages a matter of
minutes; Redis bytes per message do not depend on it). Per size it prints:

  - Redis used_memory at its peak (sampled every 200 ms) above the baseline, per message;
  - Redis bytes per message at rest once the job is done: used_memory above the baseline, and
    MEMORY USAGE of the job's keys (the job record);
  - the peak RSS (VmHWM) of the producer (recall file --wait) and of the largest worker;
  - the wall time against the floor (messages ÷ 10 ÷ cap), and the calls the emulator throttled.

It is "bench e2e --via file --scale SIZES" with a table of these figures.`
)
