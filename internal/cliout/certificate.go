package cliout

import (
	"fmt"
	"io"
	"time"

	"github.com/imrecall/imrecall"
	"github.com/imrecall/imrecall/certificate"
)

// Issued prints where a certificate of erasure issued for doc went (out,
// its signature and rows beside it, and with salted its salt), then its
// verification v.
func Issued(w io.Writer, out string, doc certificate.Document, salted bool) {
	p := certificate.PathsOf(out)
	fmt.Fprintf(w, "certificate of erasure for job %s\n  document  %s\n  signature %s\n  rows      %s (%d messages)\n", doc.Job.ID, p.Document, p.Signature, p.Rows, doc.Rows.Count)
	if salted {
		fmt.Fprintf(w, "  salt      %s (keep it apart from the certificate)\n", out+".salt")
	}
}

// Valid prints a certificate that checked out: its rows, job and
// verification.
func Valid(w io.Writer, doc certificate.Document) {
	fmt.Fprintf(w, "valid: signature and rows (%d) check out\njob %s  %s  %s\n", doc.Rows.Count, doc.Job.ID, doc.Job.Kind, doc.Job.Status)
	if v := doc.Verification; v != nil {
		fmt.Fprintf(w, "verified at %s: %d recalled, %d gone, %d still visible, residue %d\n", v.At.Format(time.RFC3339), v.Verified, v.Gone, v.StillVisible, v.Residue)
	}
}

// Unparked prints how many parked tasks of job id a resume or cancel
// queued again (nothing when none), or returns the unparking's error.
func Unparked(w io.Writer, id string, un imrecall.Unparked) error {
	if un.Err != nil {
		return un.Err
	}
	if un.Tasks > 0 {
		fmt.Fprintf(w, "job %s: %d parked tasks queued again\n", id, un.Tasks)
	}
	return nil
}
