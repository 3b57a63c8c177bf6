package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const consentUsage = `Usage:
  cdpstream consent show -id N                 a profile's consent per purpose (status, effective
                                               status, time, source, expiry) and whether it is suppressed
  cdpstream consent set -id N PURPOSE=granted|denied [PURPOSE=...] [-expires TIME]
                                               record decisions through the consent API (source api);
                                               -expires (RFC 3339) makes the grants lapse then
  cdpstream consent explain -sink S -message-id M
                                               why sink S dropped the event M (among its last drops)
  cdpstream consent explain -sink S -id N      what S's policy decides for profile N now
Flags of every subcommand: -addr URL (env CDPSTREAM_ADDR), -token T (env CDPSTREAM_TOKEN;
scope profiles:read, profiles:write for set).
`

// cmdConsent is the terminal face of the consent endpoints.
func cmdConsent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := newAPICommand("consent", consentUsage, args, stderr)
	if err != nil {
		return err
	}
	sub, fs := cmd.sub, cmd.fs
	id := fs.Uint("id", 0, "profile id")
	sink := fs.String("sink", "", "explain: the sink")
	msg := fs.String("message-id", "", "explain: the event's message id")
	expires := fs.String("expires", "", "set: when the grants lapse (RFC 3339)")
	pos, c, err := cmd.parse(args[1:])
	if err != nil {
		return err
	}
	pid := strconv.FormatUint(uint64(*id), 10)
	switch sub {
	case "show":
		if *id == 0 || len(pos) > 0 {
			return usageError{errors.New("show needs -id and nothing else")}
		}
		return c.do(ctx, http.MethodGet, "/v1/profiles/"+pid+"/consent", nil, stdout)
	case "set":
		if *id == 0 || len(pos) == 0 {
			return usageError{errors.New("set needs -id and at least one PURPOSE=granted|denied")}
		}
		body, err := consentBody(pos, *expires)
		if err != nil {
			return usageError{err}
		}
		return c.do(ctx, http.MethodPut, "/v1/profiles/"+pid+"/consent", body, stdout)
	case "explain":
		q := url.Values{"sink": {*sink}}
		switch {
		case *sink == "" || len(pos) > 0:
			return usageError{errors.New("explain needs -sink, and -message-id or -id")}
		case (*msg == "") == (*id == 0):
			return usageError{errors.New("explain needs one of -message-id and -id")}
		case *msg != "":
			q.Set("message_id", *msg)
		default:
			q.Set("profile_id", pid)
		}
		return c.do(ctx, http.MethodGet, "/v1/consent/explain?"+q.Encode(), nil, stdout)
	}
	return cmd.unknown()
}

// consentBody builds the PUT body from PURPOSE=STATUS arguments; expires
// applies to the grants.
func consentBody(decisions []string, expires string) (map[string]map[string]string, error) {
	if expires != "" {
		if _, err := time.Parse(time.RFC3339, expires); err != nil {
			return nil, fmt.Errorf("-expires %q: want an RFC 3339 time such as 2027-01-01T00:00:00Z", expires)
		}
	}
	body := map[string]map[string]string{}
	granted := false
	for _, d := range decisions {
		purpose, status, ok := strings.Cut(d, "=")
		if !ok || purpose == "" || (status != "granted" && status != "denied") {
			return nil, fmt.Errorf("%q: want PURPOSE=granted or PURPOSE=denied", d)
		}
		if _, dup := body[purpose]; dup {
			return nil, fmt.Errorf("%q: purpose %s is given twice", d, purpose)
		}
		body[purpose] = map[string]string{"status": status}
		if status == "granted" {
			granted = true
			if expires != "" {
				body[purpose]["expires_at"] = expires
			}
		}
	}
	if expires != "" && !granted {
		return nil, errors.New("-expires applies to grants, and none is given")
	}
	return body, nil
}
