package main

import (
	"crypto/ed25519"
	"errors"
	"io"
	"os"

	"github.com/imrecall/imrecall/certificate"
	"github.com/imrecall/imrecall/internal/cli"
	"github.com/imrecall/imrecall/internal/cliout"
	"github.com/imrecall/imrecall/jobs"
	"github.com/spf13/cobra"
)

func newCertificateCmd() *cobra.Command {
	var f historyFlags
	var keyPath, out string
	var hashSubject bool
	cmd := &cobra.Command{
		Use:   "certificate JOB --signing-key KEY.pem --out FILE",
		Short: "Verify a finished job and write a signed certificate of erasure",
		Long: `Verifies the job (as imrecall verify does) and writes a certificate of erasure: FILE, a JSON
document naming the job, its scope and coverage gaps, who asked and why, counts that reconcile,
the verification result, the imrecall version and a hash of its configuration (no secrets);
FILE.rows.jsonl, every message of the job with its final state and what verification saw
(the document carries its SHA-256); and FILE.sig, an Ed25519 signature of FILE's exact bytes:

  openssl genpkey -algorithm ed25519 -out KEY.pem
  openssl pkey -in KEY.pem -pubout -out PUB.pem
  openssl pkeyutl -verify -pubin -inkey PUB.pem -rawin -in FILE -sigfile FILE.sig

With --hash-subject the document names the user by a salted SHA-256 only; the salt is written
to FILE.salt (keep it with the erasure request, apart from the certificate).

The certificate is written even when verification finds messages still visible (it says so);
the exit code is then 5.`,
		Example: `  imrecall certificate 20261122T230512Z-9f3a1c2b --signing-key dpo-key.pem --out erasure-881.json
  imrecall certificate verify erasure-881.json --public-key dpo-pub.pem
  imrecall certificate render erasure-881.json --public-key dpo-pub.pem --out erasure-881.html`,
		Args: cobra.ExactArgs(1),
		RunE: cli.WithEnv(func(cmd *cobra.Command, args []string) error {
			if err := jobs.ValidID(args[0]); err != nil {
				return cli.Usage(err)
			}
			if keyPath == "" {
				return cli.BadInput("--signing-key: required (an Ed25519 private key in PKCS#8 PEM: openssl genpkey -algorithm ed25519)")
			}
			if out == "" {
				return cli.BadInput("--out: required (the certificate's file name)")
			}
			key, err := certificate.LoadPrivateKey(keyPath)
			if err != nil {
				return cli.BadInput("--signing-key %v", err)
			}
			if _, err := os.Stat(out); err == nil {
				return cli.BadInput("--out %s: exists; a certificate is never overwritten", out)
			}
			c, im, _, err := f.open(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			job, err := c.store.Get(ctx, args[0])
			if err != nil {
				return cliError(err)
			}
			if !job.Finished() {
				return cli.BadInput("job %s is %s with %d pending: a certificate is for a finished job (imrecall jobs wait %s)", job.ID, job.Status, job.Counts.Pending, job.ID)
			}
			v, doc, err := certificate.Issue(ctx, certificate.Request{
				Store: c.store, IM: im, Job: job, Actor: f.actor, Concurrency: f.concurrency,
				Out: out, Key: key, HashSubject: hashSubject,
				Software: certificate.Software{Name: "imrecall", Version: certificate.BuildVersion(), ConfigSHA256: f.configHash()},
			})
			if err != nil {
				return err
			}
			cliout.Issued(cmd.OutOrStdout(), out, doc, hashSubject && v.Subject != "")
			cliout.Verification(cmd.OutOrStdout(), v)
			return verificationExit(v)
		}),
	}
	f.register(cmd)
	cmd.Flags().StringVar(&keyPath, "signing-key", "", "Ed25519 private key, PKCS#8 PEM (openssl genpkey -algorithm ed25519)")
	cmd.Flags().StringVar(&out, "out", "", "the certificate's file (FILE.sig and FILE.rows.jsonl are written beside it)")
	cmd.Flags().BoolVar(&hashSubject, "hash-subject", false, "name the user by a salted SHA-256 only (the salt goes to FILE.salt)")
	cmd.AddCommand(newCertificateVerifyCmd(), newCertificateRenderCmd())
	return cmd
}

// configHash hashes the settings that shape the calls, for a certificate
// made by the CLI or by serve: never a secret.
func (f *imCallFlags) configHash() string {
	return certificate.ConfigHash(map[string]any{
		"api_base": f.im.apiBase, "sdkappid": f.im.appID, "admin": f.im.admin,
		"cap": f.limits.cap, "cap_of": f.limits.capOf, "margin": f.limits.margin,
		"slack": f.limits.slack.String(),
	})
}

func newCertificateVerifyCmd() *cobra.Command {
	var pubPath string
	cmd := &cobra.Command{
		Use:     "verify FILE --public-key PUB.pem",
		Short:   "Check a certificate's signature and that its rows file is the one it names",
		Example: `  imrecall certificate verify erasure-881.json --public-key dpo-pub.pem`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubPath == "" {
				return cli.BadInput("--public-key: required (openssl pkey -in KEY.pem -pubout)")
			}
			pub, err := certificate.LoadPublicKey(pubPath)
			if err != nil {
				return cli.BadInput("--public-key %v", err)
			}
			doc, err := certificate.Verify(args[0], pub)
			var fail *certificate.Failure
			if errors.As(err, &fail) {
				return cli.Exit(cli.ExitFailure, "NOT VALID: "+fail.Error())
			}
			if err != nil {
				return err
			}
			cliout.Valid(cmd.OutOrStdout(), doc)
			return nil
		},
	}
	cmd.Flags().StringVar(&pubPath, "public-key", "", "the signer's Ed25519 public key, PEM")
	return cmd
}

func newCertificateRenderCmd() *cobra.Command {
	var pubPath, out string
	cmd := &cobra.Command{
		Use:     "render FILE [--public-key PUB.pem] [--out PAGE.html]",
		Short:   "Render a certificate as a printable HTML page (checked first when --public-key is given)",
		Example: `  imrecall certificate render erasure-881.json --public-key dpo-pub.pem --out erasure-881.html`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			view, err := certificateView(args[0], pubPath)
			if err != nil {
				return err
			}
			var w io.Writer = cmd.OutOrStdout()
			if out != "" {
				fh, err := os.Create(out)
				if err != nil {
					return cli.BadInput("--out %v", err)
				}
				defer fh.Close()
				w = fh
			}
			return certificate.RenderHTML(w, view)
		},
	}
	cmd.Flags().StringVar(&pubPath, "public-key", "", "check the certificate with this public key first")
	cmd.Flags().StringVar(&out, "out", "", "write the page here (default: standard output)")
	return cmd
}

// certificateView reads a certificate for rendering, checking it when a
// public key is given.
func certificateView(path, pubPath string) (certificate.View, error) {
	var pub ed25519.PublicKey
	if pubPath != "" {
		var err error
		if pub, err = certificate.LoadPublicKey(pubPath); err != nil {
			return certificate.View{}, cli.BadInput("--public-key %v", err)
		}
	}
	v, err := certificate.OpenView(path, pub)
	var notCert *certificate.NotACertificateError
	if pub == nil && err != nil || errors.As(err, &notCert) {
		return v, cli.Usage(err)
	}
	return v, err
}
