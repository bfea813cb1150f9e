package worker

// The log messages of a message in doubt: one a call of ours may have
// recalled without our hearing the answer (a worker killed mid-call, a
// timeout). Operators search for them, and the chaos suite
// (cmd/imrecall TestChaos) counts them against the emulator's ground truth;
// they are constants so that neither loses track of a rewording. Each line
// names the job (job_id), the target (group_id, or from and to) and the
// message (item: the seq or MsgKey; seqs for LogCannotCheckBeforeCall).
const (
	// LogFoundRecalledBeforeCall: history checks before the first call of
	// a delivery found messages an earlier delivery sent unanswered already
	// recalled; they are counted recalled, attribution unknown, with no
	// second recall request (attribute messages: how many).
	LogFoundRecalledBeforeCall = "messages found recalled after a call whose answer was lost: counted recalled, attribution unknown"
	// LogCannotCheckBeforeCall: that history check failed; the message is
	// sent again and checked after its answer.
	LogCannotCheckBeforeCall = "cannot check a message sent before a crash; will check after the call"
	// LogCheckAfterGoneFailed: a message in doubt was answered gone
	// (10030), and the history check that tells who recalled it failed;
	// the worker sends the recall once more.
	LogCheckAfterGoneFailed = "checking a message sent unanswered failed; will retry"
	// LogRecalledUnattributed: a message in doubt was answered gone and
	// the history (or 20023, already recalled) shows it recalled: counted
	// recalled, attribution unknown.
	LogRecalledUnattributed = "message already recalled after an unanswered call: counting as recalled, attribution unknown"
)
