package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/spf13/cobra"
)

type emulatorOptions struct {
	listen        string
	appID         int64
	admin         string
	secretKey     string
	secretKeyFile string
	rate          int
	rateOf        string
	latency       string
	fault         string
	itemFault     string
	fault502      float64
	faultHang     float64
	hangFor       time.Duration
	generate      string
	seed          int64
	callbackURL   string
	callbackToken string
	replay        bool
	logs          logFlags
}

func newEmulatorCmd() *cobra.Command {
	var o emulatorOptions
	cmd := &cobra.Command{
		Use:   "emulator",
		Short: "Run an in-memory Tencent IM API server for tests, benchmarks and demos",
		Long: `The emulator serves the Tencent IM REST APIs imrecall uses (and the ones that seed data) on the
real paths, checks every call as the real service does (UserSig, admin identifier, JSON), enforces
the rate cap per API over any sliding second (60007 past it), and can inject faults. The first line
it prints is "listening on http://HOST:PORT". GET /emulator/stats reports, per API, calls,
accepted, throttled, faults, max_1s and a per-second series; GET /emulator/truth the ground truth.`,
		Example: `  imrecall emulator --listen 127.0.0.1:0 --sdkappid 1400000001 --secret-key-file key.txt
  imrecall emulator --rate 200 --rate-of send_group_msg=0 --latency 20ms-80ms --fault 10002=0.05,91000=0.02 --fault-502 0.01
  imrecall emulator --generate groups=200,users=2000,messages=100000,c2c=5000,heavy=1,heavy-groups=120,peers=25
  imrecall emulator --generate messages=20000 --callback-url http://127.0.0.1:8080/callback --callback-token "$TOKEN" --replay-callbacks`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			return runEmulator(cmd.Context(), cmd, &o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on (port 0: any free port)")
	fl.Int64Var(&o.appID, "sdkappid", 1400000001, "the SDKAppID it answers as")
	fl.StringVar(&o.admin, "admin", "administrator", "the App admin identifier")
	fl.StringVar(&o.secretKey, "secret-key", "", "the secret key UserSigs are checked against (or IMRECALL_SECRET_KEY)")
	fl.StringVar(&o.secretKeyFile, "secret-key-file", "", "file holding the secret key")
	fl.IntVar(&o.rate, "rate", 200, "calls/s per API over any sliding second (0: unlimited)")
	fl.StringVar(&o.rateOf, "rate-of", "", "per-API caps by the path's last segment, e.g. send_group_msg=0,group_msg_recall=100")
	fl.StringVar(&o.latency, "latency", "0", "latency added to every answer: 30ms, or a range 20ms-80ms")
	fl.StringVar(&o.fault, "fault", "", "per-call error codes with probabilities, e.g. 10002=0.05,91000=0.02")
	fl.StringVar(&o.itemFault, "item-fault", "", "group_msg_recall per-seq RetCodes with probabilities, e.g. 10002=0.05")
	fl.Float64Var(&o.fault502, "fault-502", 0, "probability of an HTTP 502")
	fl.Float64Var(&o.faultHang, "fault-hang", 0, "probability of a call that hangs unanswered")
	fl.DurationVar(&o.hangFor, "hang-for", 10*time.Second, "how long a hung call hangs")
	fl.StringVar(&o.generate, "generate", "", "synthetic data: groups=,users=,messages=,c2c=,heavy=,heavy-groups=,heavy-share=,peers=,topics=,seed=")
	fl.Int64Var(&o.seed, "seed", 1, "seed of fault and latency randomness")
	fl.StringVar(&o.callbackURL, "callback-url", "", "deliver after-send callbacks (Group./C2C.CallbackAfterSendMsg) here, as Tencent does, e.g. http://127.0.0.1:8080/callback")
	fl.StringVar(&o.callbackToken, "callback-token", "", "sign callbacks with this token (Sign, RequestTime), as the IM console's callback token; or IMRECALL_CALLBACK_TOKEN")
	fl.BoolVar(&o.replay, "replay-callbacks", false, "once listening, deliver the after-send callback of every --generate'd message, as if just sent")
	o.logs.register(cmd)
	return cmd
}

func runEmulator(ctx context.Context, cmd *cobra.Command, o *emulatorOptions) error {
	log, err := o.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	key, err := secretFrom(o.secretKey, o.secretKeyFile, "--secret-key / --secret-key-file")
	if err != nil {
		return err
	}
	if key == "" {
		return badInput("--secret-key (IMRECALL_SECRET_KEY) or --secret-key-file: required")
	}
	cfg := emulator.Config{SDKAppID: o.appID, Admin: o.admin, SecretKey: key, Rate: o.rate, Seed: o.seed, Logger: log}
	if cfg.RateOf, err = parseCaps("rate-of", o.rateOf); err != nil {
		return err
	}
	if cfg.Latency, cfg.LatencyMax, err = parseLatency(o.latency); err != nil {
		return err
	}
	if cfg.Faults.Codes, err = parseProbs("fault", o.fault); err != nil {
		return err
	}
	if cfg.Faults.ItemCodes, err = parseProbs("item-fault", o.itemFault); err != nil {
		return err
	}
	cfg.Faults.HTTP502, cfg.Faults.Hang, cfg.Faults.HangFor = o.fault502, o.faultHang, o.hangFor
	cfg.Callbacks = emulator.CallbackConfig{URL: o.callbackURL, Token: o.callbackToken}
	if o.replay && o.callbackURL == "" {
		return badInput("--replay-callbacks: needs --callback-url")
	}
	emu, err := emulator.New(cfg)
	if err != nil {
		return badInput("%v", err)
	}
	defer emu.Close()
	if o.generate != "" {
		spec, err := parseGenerate(o.generate)
		if err != nil {
			return err
		}
		ds, err := emu.Generate(spec)
		if err != nil {
			return badInput("--generate: %v", err)
		}
		b, _ := json.Marshal(ds)
		fmt.Fprintf(cmd.ErrOrStderr(), "%s\n", b)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return badInput("--listen %q: %v", o.listen, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "listening on http://%s\n", ln.Addr())
	srv := &http.Server{Handler: emu, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if o.replay {
		n := emu.ReplayCallbacks()
		log.Info("replaying after-send callbacks", "callbacks", n, "url", o.callbackURL)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("emulator server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

func parseLatency(s string) (lo, hi time.Duration, err error) {
	s = strings.TrimSpace(s)
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = time.ParseDuration(strings.TrimSpace(a)); err != nil || lo < 0 {
		return 0, 0, badInput("--latency %q: want a duration such as 30ms, or a range such as 20ms-80ms", s)
	}
	if !isRange {
		return lo, lo, nil
	}
	if hi, err = time.ParseDuration(strings.TrimSpace(b)); err != nil || hi < lo {
		return 0, 0, badInput("--latency %q: want a range MIN-MAX with MIN ≤ MAX, such as 20ms-80ms", s)
	}
	return lo, hi, nil
}

func parseProbs(flag, s string) (map[int]float64, error) {
	out := map[int]float64{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		code, err1 := strconv.Atoi(strings.TrimSpace(k))
		p, err2 := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err1 != nil || err2 != nil || code <= 0 || p < 0 || p > 1 {
			return nil, badInput("--%s: %q: want CODE=PROBABILITY, e.g. 10002=0.05", flag, part)
		}
		out[code] = p
	}
	return out, nil
}

func parseGenerate(s string) (emulator.DatasetSpec, error) {
	var spec emulator.DatasetSpec
	ints := map[string]*int{
		"groups": &spec.Groups, "users": &spec.Users, "messages": &spec.GroupMessages, "c2c": &spec.C2CMessages,
		"heavy": &spec.HeavySenders, "heavy-groups": &spec.HeavyGroups, "peers": &spec.Peers, "topics": &spec.Topics,
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return spec, badInput("--generate: %q: want KEY=VALUE", part)
		}
		switch {
		case ints[k] != nil:
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return spec, badInput("--generate: %s=%q: want a whole number ≥ 0", k, v)
			}
			*ints[k] = n
		case k == "heavy-share":
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				return spec, badInput("--generate: heavy-share=%q: want 0 to 1", v)
			}
			spec.HeavyShare = f
		case k == "seed":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return spec, badInput("--generate: seed=%q: want a whole number", v)
			}
			spec.Seed = n
		default:
			return spec, badInput("--generate: unknown key %q (groups, users, messages, c2c, heavy, heavy-groups, heavy-share, peers, topics, seed)", k)
		}
	}
	return spec, nil
}
