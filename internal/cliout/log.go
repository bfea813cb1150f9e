package cliout

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"
)

// Logger returns the logger of --log-level (debug, info, warn or error)
// and --log-format (text or json), writing to w; its error names the flag.
func Logger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// AsynqLevel is asynq's log level for a --log-level.
func AsynqLevel(level string) asynq.LogLevel {
	switch strings.ToLower(level) {
	case "debug":
		return asynq.DebugLevel
	case "warn":
		return asynq.WarnLevel
	case "error":
		return asynq.ErrorLevel
	}
	return asynq.InfoLevel
}
