package main

import (
	"io"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"
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
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, badInput("--log-level %q: want debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, badInput("--log-format %q: want text or json", f.format)
}

func (f *logFlags) asynqLevel() asynq.LogLevel {
	switch strings.ToLower(f.level) {
	case "debug":
		return asynq.DebugLevel
	case "warn":
		return asynq.WarnLevel
	case "error":
		return asynq.ErrorLevel
	}
	return asynq.InfoLevel
}

// asynqLogger adapts slog to asynq's logger (worker.AsynqLogger).
type asynqLogger = worker.AsynqLogger
