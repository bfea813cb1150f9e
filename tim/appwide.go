package tim

import (
	"errors"
	"fmt"
)

// AppWide says that an error code condemns every call of the app, not one
// message: the admin credential, the administrator account, the SDKAppID or
// the region (API base) is wrong, or the app itself is disabled. Retrying
// or dead-lettering message by message cannot help; a person must fix the
// configuration. Hint names what to check.
type AppWide struct {
	Code int
	What string // what IM rejected, e.g. "the admin credential"
	Hint string // what to fix, e.g. "check IMRECALL_SECRET_KEY"
}

// Reason is the pause reason shown to a person, e.g.
// "paused: IM rejected the admin credential (70001 UserSig expired): check IMRECALL_SECRET_KEY".
func (a AppWide) Reason() string {
	return fmt.Sprintf("paused: IM rejected %s (%d %s): %s, then resume the job", a.What, a.Code, Describe(a.Code), a.Hint)
}

// appWide lists the codes that say the app's configuration is wrong.
// Sources: the public error code page and ../shared/reference notes; 70016
// and 70020 can mean the wrong region.
var appWide = map[int]AppWide{
	20002: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	60004: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY and IMRECALL_ADMIN"},
	60005: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY and IMRECALL_ADMIN"},
	70001: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY (and the host's clock)"},
	70002: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	70003: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	70004: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	70005: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	70009: {What: "the admin credential", Hint: "check IMRECALL_SECRET_KEY"},
	70013: {What: "the administrator account", Hint: "check IMRECALL_ADMIN"},
	60010: {What: "the administrator account", Hint: "IMRECALL_ADMIN must be an App administrator"},
	70403: {What: "the administrator account", Hint: "IMRECALL_ADMIN must be an App administrator"},
	90009: {What: "the administrator account", Hint: "IMRECALL_ADMIN must be an App administrator"},
	60006: {What: "the SDKAppID", Hint: "check IMRECALL_SDKAPPID"},
	70014: {What: "the SDKAppID", Hint: "check IMRECALL_SDKAPPID and IMRECALL_SECRET_KEY"},
	70016: {What: "the SDKAppID or region", Hint: "check IMRECALL_SDKAPPID and IMRECALL_API_BASE (the app's region)"},
	70020: {What: "the SDKAppID or region", Hint: "check IMRECALL_SDKAPPID and IMRECALL_API_BASE (the app's region)"},
	60016: {What: "the app", Hint: "the SDKAppID is disabled: check the IM console"},
	60020: {What: "the app", Hint: "the app's package expired: check the IM console"},
	60021: {What: "the caller's IP", Hint: "allow this host's IP in the IM console"},
	10041: {What: "the app", Hint: "enable group message recall in the IM console"},
}

// AppWideOf returns what an error says about the app's configuration, and
// false for any error that concerns one call or one message only.
func AppWideOf(err error) (AppWide, bool) {
	var te *Error
	if !errors.As(err, &te) || te.Code == 0 {
		return AppWide{}, false
	}
	a, ok := appWide[te.Code]
	a.Code = te.Code
	return a, ok
}
