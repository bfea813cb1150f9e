package limiter

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// Agree makes this process agree with the caps stored with the shared
// budgets of app in Redis (prefix is the limiter's Config.Prefix): with
// reset it stores its own first, logging each cap it changes; otherwise a
// stored cap that differs from this process's is a *CapMismatchError,
// naming the API and both values.
func (l *Limiter) Agree(ctx context.Context, rdb redis.UniversalClient, prefix string, app int64, apis []string, reset bool, log *slog.Logger) error {
	if reset {
		for _, api := range apis {
			prev, err := SetCap(ctx, rdb, prefix, Key{AppID: app, API: api}, l.CapOf(api))
			if err != nil {
				return err
			}
			if now := FormatCap(l.CapOf(api)); prev != now {
				log.Warn("--reset-cap: stored a new shared cap", "api", api, "sdkappid", app, "previous", prev, "cap", now)
			}
		}
	}
	return l.CheckCaps(ctx, app, apis)
}
