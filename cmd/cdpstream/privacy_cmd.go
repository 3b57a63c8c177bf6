package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const privacyUsage = `Usage:
  cdpstream privacy submit -type T -identity TYPE:VALUE [-identity ...] [-sha256] [-regulation gdpr|ccpa] [-id UUID] [-callback URL]
        T: erasure, access, portability, suppress, unsuppress, erasure_suppress, rectification;
        TYPE: an OpenDSR identity type (email, controller_customer_id, ios_advertising_id, ...);
        -sha256: the values are hex SHA-256 digests of the normalised identities, not raw;
        prints the request's receipt
      rectification adds, repeatable, at least one of:
        -fix TYPE:OLD=NEW      replace the identifier TYPE=OLD by TYPE=NEW (values holding '='
                               go in a request body POSTed to /opendsr/requests)
        -trait KEY=VALUE       set a trait (VALUE as JSON when it parses: 42, true, {"a":1};
                               otherwise as a string)
        -unset-trait KEY       remove a trait
  cdpstream privacy status ID            the request's status (and results_url when ready)
  cdpstream privacy cancel ID            cancel a pending request
  cdpstream privacy list [-status S] [-type T] [-limit N] [-cursor C]
        requests newest first, as JSON with next_cursor when more remain; S: pending,
        in_progress, completed, cancelled
Flags of every subcommand: -addr URL (env CDPSTREAM_ADDR), -token T (env CDPSTREAM_TOKEN, scope privacy:write).
`

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// cmdPrivacy is the terminal face of the OpenDSR endpoints.
func cmdPrivacy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := newAPICommand("privacy", privacyUsage, args, stderr)
	if err != nil {
		return err
	}
	sub, fs := cmd.sub, cmd.fs
	typ := fs.String("type", "", "submit: request type; list: only this type")
	status := fs.String("status", "", "list: only this status")
	limit := fs.Int("limit", 0, "list: page size (default 100, at most 1000)")
	cur := fs.String("cursor", "", "list: next_cursor of the previous page")
	regulation := fs.String("regulation", "gdpr", "submit: gdpr or ccpa")
	id := fs.String("id", "", "submit: subject_request_id (default: a new random UUID)")
	hashed := fs.Bool("sha256", false, "submit: the identity values are hex SHA-256 digests")
	var identities, callbacks, fixes, traits, unset multiFlag
	fs.Var(&identities, "identity", "submit: TYPE:VALUE, repeatable")
	fs.Var(&callbacks, "callback", "submit: status callback URL, repeatable")
	fs.Var(&fixes, "fix", "submit rectification: TYPE:OLD=NEW, repeatable")
	fs.Var(&traits, "trait", "submit rectification: KEY=VALUE, repeatable")
	fs.Var(&unset, "unset-trait", "submit rectification: KEY, repeatable")
	pos, c, err := cmd.parse(args[1:])
	if err != nil {
		return err
	}
	one := func() (string, error) {
		if len(pos) != 1 {
			return "", usageError{fmt.Errorf("%s needs a request id", sub)}
		}
		return url.PathEscape(pos[0]), nil
	}
	switch sub {
	case "submit":
		if *typ == "" || len(identities) == 0 {
			return usageError{errors.New("submit needs -type and at least one -identity TYPE:VALUE")}
		}
		if *id == "" {
			*id = newUUID()
		}
		format := "raw"
		if *hashed {
			format = "sha256"
		}
		var ids []map[string]string
		for _, s := range identities {
			t, v, ok := strings.Cut(s, ":")
			if !ok || t == "" || v == "" {
				return usageError{fmt.Errorf("-identity %q: want TYPE:VALUE", s)}
			}
			ids = append(ids, map[string]string{"identity_type": t, "identity_value": v, "identity_format": format})
		}
		body := map[string]any{"subject_request_id": *id, "subject_request_type": *typ, "regulation": *regulation,
			"submitted_time": time.Now().UTC().Format(time.RFC3339), "subject_identities": ids, "api_version": "2.0"}
		if len(callbacks) > 0 {
			body["status_callback_urls"] = []string(callbacks)
		}
		fix, err := rectificationFlags(fixes, traits, unset)
		if err != nil {
			return usageError{err}
		}
		switch {
		case fix != nil && *typ != "rectification":
			return usageError{fmt.Errorf("-fix, -trait and -unset-trait belong to -type rectification, not %s", *typ)}
		case fix == nil && *typ == "rectification":
			return usageError{errors.New("-type rectification needs at least one -fix, -trait or -unset-trait")}
		case fix != nil:
			body["extensions"] = map[string]any{"cdpstream": map[string]any{"rectification": fix}}
		}
		return c.do(ctx, http.MethodPost, "/opendsr/requests", body, stdout)
	case "status":
		rid, err := one()
		if err != nil {
			return err
		}
		return c.do(ctx, http.MethodGet, "/opendsr/requests/"+rid, nil, stdout)
	case "list":
		q := url.Values{}
		for k, v := range map[string]string{"type": *typ, "status": *status, "cursor": *cur} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if *limit != 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		return c.do(ctx, http.MethodGet, "/opendsr/requests?"+q.Encode(), nil, stdout)
	case "cancel":
		rid, err := one()
		if err != nil {
			return err
		}
		return c.do(ctx, http.MethodDelete, "/opendsr/requests/"+rid, nil, stdout)
	}
	return cmd.unknown()
}

// rectificationFlags builds the body of a rectification request from the
// -fix, -trait and -unset-trait flags, or nil when none was given.
func rectificationFlags(fixes, traits, unset []string) (map[string]any, error) {
	if len(fixes)+len(traits)+len(unset) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	var ids []map[string]string
	for _, f := range fixes {
		typ, rest, ok := strings.Cut(f, ":")
		old, neu, ok2 := strings.Cut(rest, "=")
		if !ok || !ok2 || typ == "" || old == "" || neu == "" {
			return nil, fmt.Errorf("-fix %q: want TYPE:OLD=NEW", f)
		}
		if strings.Contains(neu, "=") {
			// a=b=c could be a=b → c or a → b=c: refuse to guess.
			return nil, fmt.Errorf("-fix %q: more than one '='; for values holding '=' POST the request body to /opendsr/requests", f)
		}
		ids = append(ids, map[string]string{"type": typ, "old": old, "new": neu})
	}
	if ids != nil {
		out["identifiers"] = ids
	}
	set := map[string]any{}
	for _, kv := range traits {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-trait %q: want KEY=VALUE", kv)
		}
		var val any = v
		if json.Valid([]byte(v)) {
			dec := json.NewDecoder(strings.NewReader(v))
			dec.UseNumber() // 12345678901234567890 keeps every digit
			if err := dec.Decode(&val); err != nil || val == nil {
				val = v // JSON null (which -unset-trait says): a string
			}
		}
		if _, dup := set[k]; dup {
			return nil, fmt.Errorf("-trait %q: %s is given twice", kv, k)
		}
		set[k] = val
	}
	for _, k := range unset {
		if k == "" {
			return nil, errors.New("-unset-trait needs a KEY")
		}
		if v, dup := set[k]; dup && v != nil {
			return nil, fmt.Errorf("-unset-trait %s: the trait is also set by -trait", k)
		}
		set[k] = nil
	}
	if len(set) > 0 {
		out["traits"] = set
	}
	return out, nil
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
