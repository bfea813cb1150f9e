package console

import (
	"log/slog"
	"net/http"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/api"
	"github.com/redis/go-redis/v9"
)

// MountOn mounts the console on the paths it serves (/, /jobs/..., /new,
// ...) in front of srv's handler: everything else (/v1/, /monitor/,
// /healthz, ...) stays the API's. The console acts through client, the
// API's Client, on behalf of the signed-in token; capOf reports each API's
// cap.
func MountOn(srv *api.Server, client *imrecall.Client, tokens []api.Token, rdb redis.UniversalClient, prefix string, capOf func(api string) int, log *slog.Logger) (http.Handler, error) {
	apiHandler := srv.Handler()
	con, err := New(Config{
		Backend: NewClientBackend(client, apiHandler, tokens), Redis: rdb, Prefix: prefix,
		Authenticate: srv.Authenticate, Current: byName(tokens), CapOf: capOf, Log: log,
	})
	if err != nil {
		return nil, err
	}
	return con.Mount(apiHandler), nil
}

// byName finds a token of tokens by name.
func byName(tokens []api.Token) func(string) (api.Token, bool) {
	m := make(map[string]api.Token, len(tokens))
	for _, t := range tokens {
		m[t.Name] = t
	}
	return func(name string) (api.Token, bool) {
		t, ok := m[name]
		return t, ok
	}
}
