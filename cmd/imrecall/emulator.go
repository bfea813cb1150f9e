package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/imrecall/imrecall/emulator"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/spf13/cobra"
)

// emulatorOptions are the flags of `imrecall emulator` that are not
// emulator.Config fields as they are.
type emulatorOptions struct {
	cfg                                                                 emulator.Config
	listen, secretKey, secretKeyFile, rateOf, latency, fault, itemFault string
	generate                                                            string
	replay                                                              bool
	logs                                                                logFlags
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
		RunE: cli.WithEnv(func(cmd *cobra.Command, _ []string) error { return runEmulator(cmd.Context(), cmd, &o) }),
	}
	fl := cmd.Flags()
	fl.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on (port 0: any free port)")
	fl.Int64Var(&o.cfg.SDKAppID, "sdkappid", 1400000001, "the SDKAppID it answers as")
	fl.StringVar(&o.cfg.Admin, "admin", "administrator", "the App admin identifier")
	fl.StringVar(&o.secretKey, "secret-key", "", "the secret key UserSigs are checked against (or IMRECALL_SECRET_KEY)")
	fl.StringVar(&o.secretKeyFile, "secret-key-file", "", "file holding the secret key")
	fl.IntVar(&o.cfg.Rate, "rate", 200, "calls/s per API over any sliding second (0: unlimited)")
	fl.StringVar(&o.rateOf, "rate-of", "", "per-API caps by the path's last segment, e.g. send_group_msg=0,group_msg_recall=100")
	fl.StringVar(&o.latency, "latency", "0", "latency added to every answer: 30ms, or a range 20ms-80ms")
	fl.StringVar(&o.fault, "fault", "", "per-call error codes with probabilities, e.g. 10002=0.05,91000=0.02")
	fl.StringVar(&o.itemFault, "item-fault", "", "group_msg_recall per-seq RetCodes with probabilities, e.g. 10002=0.05")
	fl.Float64Var(&o.cfg.Faults.HTTP502, "fault-502", 0, "probability of an HTTP 502 (the call has no effect)")
	fl.Float64Var(&o.cfg.Faults.HTTP502AfterEffect, "fault-502-after", 0, "probability of an HTTP 502 after the call took effect (its answer lost at the gateway)")
	fl.Float64Var(&o.cfg.Faults.Hang, "fault-hang", 0, "probability of a call that hangs unanswered")
	fl.DurationVar(&o.cfg.Faults.HangFor, "hang-for", 10*time.Second, "how long a hung call hangs")
	fl.StringVar(&o.generate, "generate", "", "synthetic data: groups=,users=,messages=,c2c=,heavy=,heavy-groups=,heavy-share=,peers=,topics=,seed=")
	fl.Int64Var(&o.cfg.Seed, "seed", 1, "seed of fault and latency randomness")
	fl.StringVar(&o.cfg.Callbacks.URL, "callback-url", "", "deliver after-send callbacks (Group./C2C.CallbackAfterSendMsg) here, as Tencent does, e.g. http://127.0.0.1:8080/callback")
	fl.StringVar(&o.cfg.Callbacks.Token, "callback-token", "", "sign callbacks with this token (Sign, RequestTime), as the IM console's callback token; or IMRECALL_CALLBACK_TOKEN")
	fl.BoolVar(&o.replay, "replay-callbacks", false, "once listening, deliver the after-send callback of every --generate'd message, as if just sent")
	o.logs.register(cmd)
	return cmd
}

// runEmulator wires the flags to the emulator package: its Config, a
// generated dataset, a listener, Serve until interrupted.
func runEmulator(ctx context.Context, cmd *cobra.Command, o *emulatorOptions) error {
	log, err := o.logs.logger(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	key, err := cli.SecretFrom(o.secretKey, o.secretKeyFile, "--secret-key / --secret-key-file")
	if err != nil {
		return err
	}
	if key == "" {
		return cli.BadInput("--secret-key (IMRECALL_SECRET_KEY) or --secret-key-file: required")
	}
	cfg := o.cfg
	cfg.SecretKey, cfg.Logger = key, log
	if cfg.RateOf, err = parseCaps("rate-of", o.rateOf); err != nil {
		return err
	}
	if cfg.Latency, cfg.LatencyMax, err = parseLatency(o.latency); err != nil {
		return err
	}
	if cfg.Faults.Codes, err = emulator.ParseFaultCodes(o.fault); err != nil {
		return cli.BadInput("--fault: %v", err)
	}
	if cfg.Faults.ItemCodes, err = emulator.ParseFaultCodes(o.itemFault); err != nil {
		return cli.BadInput("--item-fault: %v", err)
	}
	if o.replay && cfg.Callbacks.URL == "" {
		return cli.BadInput("--replay-callbacks: needs --callback-url")
	}
	emu, err := emulator.New(cfg)
	if err != nil {
		return cli.BadInput("%v", err)
	}
	defer emu.Close()
	if o.generate != "" {
		spec, err := emulator.ParseDatasetSpec(o.generate)
		if err != nil {
			return cli.BadInput("--generate: %v", err)
		}
		ds, err := emu.Generate(spec)
		if err != nil {
			return cli.BadInput("--generate: %v", err)
		}
		b, _ := json.Marshal(ds)
		fmt.Fprintf(cmd.ErrOrStderr(), "%s\n", b)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return cli.BadInput("--listen %q: %v", o.listen, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "listening on http://%s\n", ln.Addr())
	if o.replay {
		n := emu.ReplayCallbacks()
		log.Info("replaying after-send callbacks", "callbacks", n, "url", cfg.Callbacks.URL)
	}
	return emu.Serve(ctx, ln)
}

// parseLatency is emulator.ParseLatency as a --latency flag's usage error.
func parseLatency(s string) (lo, hi time.Duration, err error) {
	if lo, hi, err = emulator.ParseLatency(s); err != nil {
		return 0, 0, cli.BadInput("--latency %v", err)
	}
	return lo, hi, nil
}
