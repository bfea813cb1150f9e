package main

import (
	"io"
	"log/slog"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/worker"
	"github.com/spf13/cobra"
)

// logFlags choose the log level and format; logs go to standard error.
type logFlags struct {
	level  string
	format string
}

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().StringVar(&f.format, "log-format", "text", "text or json")
}

func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	log, err := cliout.Logger(w, f.level, f.format)
	if err != nil {
		return nil, cli.Usage(err)
	}
	return log, nil
}

// asynqLogger adapts slog to asynq's logger (worker.AsynqLogger).
type asynqLogger = worker.AsynqLogger
