package tim

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// regions maps the documented region names (lower case) to the REST API
// domain of that region. Apps live in one region; calling another region's
// domain fails with 70016 or 70020.
var regions = map[string]string{
	"china":         "console.tim.qq.com",
	"singapore":     "adminapisgp.im.qcloud.com",
	"seoul":         "adminapikr.im.qcloud.com",
	"tokyo":         "adminapijpn.im.qcloud.com",
	"frankfurt":     "adminapiger.im.qcloud.com",
	"mumbai":        "adminapiind.im.qcloud.com",
	"siliconvalley": "adminapiusa.im.qcloud.com",
	"usa":           "adminapiusa.im.qcloud.com",
	"jakarta":       "adminapiidn.im.qcloud.com",
}

// Regions returns the region names BaseURL accepts, sorted.
func Regions() []string {
	names := make([]string, 0, len(regions))
	for name := range regions {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// BaseURL resolves a region name ("singapore", case-insensitive), a bare
// documented domain ("adminapisgp.im.qcloud.com") or an http(s) URL (such as
// an emulator's) to the base URL that API paths are appended to: scheme, host
// and an optional path prefix, without a trailing slash. Region names and bare
// domains resolve to https.
func BaseURL(regionOrURL string) (string, error) {
	s := strings.TrimSpace(regionOrURL)
	if s == "" {
		return "", fmt.Errorf("empty base URL: want a region (%s) or an http(s) URL", strings.Join(Regions(), ", "))
	}
	key := strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	if domain, ok := regions[key]; ok {
		return "https://" + domain, nil
	}
	for _, domain := range regions {
		if strings.EqualFold(s, domain) {
			return "https://" + domain, nil
		}
	}
	if !strings.Contains(s, "://") {
		return "", fmt.Errorf("unknown region %q: want one of %s, or an http(s) URL", s, strings.Join(Regions(), ", "))
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("parse base URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("base URL %q: scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return "", fmt.Errorf("base URL %q: no host", u.Redacted())
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("base URL %q: must not carry user info, a query or a fragment", u.Redacted())
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	return u.Scheme + "://" + u.Host + path, nil
}
