// Package imclient builds the Tencent IM client of an imrecall process:
// gated by the rate limiter every process shares through Redis, after this
// process agrees with the caps stored there.
package imclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/imrecall/imrecall/limiter"
	"github.com/imrecall/imrecall/tim"
	"github.com/redis/go-redis/v9"
)

// Config is what New builds a client from.
type Config struct {
	// Redis holds the shared budgets, under Prefix+":rl".
	Redis  redis.UniversalClient
	Prefix string
	// Cap is calls/s per API per app (limiter.Unlimited for none); CapOf,
	// in limiter.ParseCapOf's form, sets caps per API ("" for none).
	Cap   int
	CapOf string
	// Margin, above 0 (to 0.5), fixes the share of the cap left unused;
	// 0 or below: none fixed, slots paced by the calls' measured arrival
	// bounds and widened on throttles.
	Margin float64
	// Slack is how much later after its write a call may be counted by the
	// server than others are (limiter.Config.Slack): above 0 to MaxSlack
	// (limiter.DefaultSlack unless the operator knows better).
	Slack time.Duration
	// Agree makes this process agree with the caps stored in Redis before
	// it calls (serve, worker); Reset stores this process's caps first
	// instead of refusing a stored cap that differs.
	Agree, Reset bool
	// IM is the client's configuration; New sets its Gate.
	IM     tim.Config
	Logger *slog.Logger
	// Observer, if set, sees each wait on the limiter.
	Observer func(limiter.Key, time.Duration)
}

// MaxSlack bounds Config.Slack: at 500 ms a budget already runs at two
// thirds of its cap.
const MaxSlack = 500 * time.Millisecond

// InputError is a setting the operator must change (exit 2 in the CLI).
// Its text names the flag.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// New builds the limiter and the IM client gated by it for cfg.IM.SDKAppID.
func New(ctx context.Context, cfg Config) (*tim.Client, *limiter.Limiter, error) {
	capOf, err := limiter.ParseCapOf(cfg.CapOf)
	if err != nil {
		return nil, nil, inputErr("--cap-of: %v", err)
	}
	lcfg := limiter.Config{Cap: cfg.Cap, CapOf: capOf, Prefix: cfg.Prefix + ":rl", Logger: cfg.Logger, Observer: cfg.Observer}
	if cfg.Margin > 0 {
		if cfg.Margin > 0.5 {
			return nil, nil, inputErr("--margin (IMRECALL_MARGIN) %v: want 0 to 0.5", cfg.Margin)
		}
		lcfg.Margin = cfg.Margin
	}
	if cfg.Slack <= 0 || cfg.Slack > MaxSlack {
		return nil, nil, inputErr("--slack (IMRECALL_SLACK) %v: want above 0 to %v", cfg.Slack, MaxSlack)
	}
	lcfg.Slack = cfg.Slack
	lim, err := limiter.New(cfg.Redis, lcfg)
	if err != nil {
		return nil, nil, inputErr("limiter: %v", err)
	}
	if cfg.Agree {
		apis := make([]string, len(tim.AllAPIs))
		for i, a := range tim.AllAPIs {
			apis[i] = a.Name()
		}
		if err := lim.Agree(ctx, cfg.Redis, cfg.Prefix+":rl", cfg.IM.SDKAppID, apis, cfg.Reset, cfg.Logger); err != nil {
			var m *limiter.CapMismatchError
			if errors.As(err, &m) {
				return nil, nil, &InputError{err}
			}
			return nil, nil, err
		}
	}
	im := cfg.IM
	im.Gate = lim.ForApp(im.SDKAppID)
	cl, err := tim.New(im)
	if err != nil {
		return nil, nil, &InputError{err}
	}
	return cl, lim, nil
}
