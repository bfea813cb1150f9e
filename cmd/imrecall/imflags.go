package main

import (
	"log/slog"
	"strings"
	"time"

	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
	"github.com/spf13/cobra"
)

// imCallFlags are the flags of a command that calls the IM API through the
// shared limiter (serve, worker, verify, certificate): Redis, the IM client,
// the limiter and the logs.
type imCallFlags struct {
	redis  redisFlags
	im     imFlags
	limits limitFlags
	logs   logFlags
}

func (f *imCallFlags) register(cmd *cobra.Command) {
	f.redis.register(cmd)
	f.im.register(cmd)
	f.limits.register(cmd)
	f.logs.register(cmd)
}

// imFlags configure the Tencent IM client.
type imFlags struct {
	apiBase       string
	appID         int64
	admin         string
	secretKey     string
	secretKeyFile string
	timeout       time.Duration
}

func (f *imFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.apiBase, "api-base", "china", "Tencent IM API: a region (china, singapore, seoul, tokyo, frankfurt, mumbai, siliconvalley, jakarta) or a URL such as the emulator's")
	fl.Int64Var(&f.appID, "sdkappid", 0, "the app's SDKAppID (required)")
	fl.StringVar(&f.admin, "admin", "administrator", "the App admin account the calls are made as")
	fl.StringVar(&f.secretKey, "secret-key", "", "the app's SecretKey; prefer IMRECALL_SECRET_KEY or --secret-key-file, as arguments are visible to other users")
	fl.StringVar(&f.secretKeyFile, "secret-key-file", "", "file holding the app's SecretKey")
	fl.DurationVar(&f.timeout, "timeout", tim.DefaultTimeout, "per-call timeout (the server's own is 3 s)")
}

// config validates the flags and returns the client configuration (without
// a gate), naming the flag or variable that is wrong.
func (f *imFlags) config(log *slog.Logger) (tim.Config, error) {
	if f.appID <= 0 {
		return tim.Config{}, cli.BadInput("--sdkappid (IMRECALL_SDKAPPID): required, a positive number")
	}
	if strings.TrimSpace(f.admin) == "" {
		return tim.Config{}, cli.BadInput("--admin (IMRECALL_ADMIN): required")
	}
	key, err := cli.SecretFrom(f.secretKey, f.secretKeyFile, "--secret-key / --secret-key-file (IMRECALL_SECRET_KEY / IMRECALL_SECRET_KEY_FILE)")
	if err != nil {
		return tim.Config{}, err
	}
	if key == "" {
		return tim.Config{}, cli.BadInput("the app's SecretKey is required: set IMRECALL_SECRET_KEY or --secret-key-file")
	}
	if _, err := tim.BaseURL(f.apiBase); err != nil {
		return tim.Config{}, cli.BadInput("--api-base (IMRECALL_API_BASE): %v", err)
	}
	if f.timeout <= 3*time.Second {
		return tim.Config{}, cli.BadInput("--timeout %v: must be above the server's 3 s", f.timeout)
	}
	return tim.Config{
		SDKAppID: f.appID, Admin: f.admin, SecretKey: tim.Secret(key),
		BaseURL: f.apiBase, Timeout: f.timeout, Logger: log, UserAgent: "imrecall",
	}, nil
}

// parseCaps is limiter.ParseCapOf as a usage error naming --flag.
func parseCaps(flag, s string) (map[string]int, error) {
	m, err := limiter.ParseCapOf(s)
	if err != nil {
		return nil, cli.BadInput("--%s: %v", flag, err)
	}
	return m, nil
}
