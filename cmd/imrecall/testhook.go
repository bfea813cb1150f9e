package main

import (
	"github.com/imrecall/imrecall/internal/testhook"
	"github.com/imrecall/imrecall/producer"
	"github.com/spf13/cobra"
)

// testPauseEnv is the test-only hook of internal/testhook.
const testPauseEnv = testhook.PauseEnv

// testHookEnqueuer wraps q with the test-only pause when it is set.
func testHookEnqueuer(cmd *cobra.Command, q producer.Enqueuer) producer.Enqueuer {
	return testhook.Enqueuer(q, cmd.ErrOrStderr())
}
