package main

import (
	"context"
	"crypto/rand"
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
  cdpstream privacy submit -type T -identity TYPE:VALUE [-identity ...] [-regulation gdpr|ccpa] [-id UUID] [-callback URL]
        T: erasure, access, portability, suppress, unsuppress, erasure_suppress (rectification
        needs a body: POST it to /opendsr/requests); TYPE: an OpenDSR identity type
        (email, controller_customer_id, ios_advertising_id, ...); prints the request's receipt
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
	var identities, callbacks multiFlag
	fs.Var(&identities, "identity", "submit: TYPE:VALUE, repeatable")
	fs.Var(&callbacks, "callback", "submit: status callback URL, repeatable")
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
		var ids []map[string]string
		for _, s := range identities {
			t, v, ok := strings.Cut(s, ":")
			if !ok || t == "" || v == "" {
				return usageError{fmt.Errorf("-identity %q: want TYPE:VALUE", s)}
			}
			ids = append(ids, map[string]string{"identity_type": t, "identity_value": v, "identity_format": "raw"})
		}
		body := map[string]any{"subject_request_id": *id, "subject_request_type": *typ, "regulation": *regulation,
			"submitted_time": time.Now().UTC().Format(time.RFC3339), "subject_identities": ids, "api_version": "2.0"}
		if len(callbacks) > 0 {
			body["status_callback_urls"] = []string(callbacks)
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

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
