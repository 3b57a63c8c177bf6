package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestConsentCommands: a person denies analytics in an event; `consent
// explain` says why the analytics sink dropped it, `consent show` shows
// the decision, `consent set` records a grant through the API, after
// which the policy keeps the person (explain by profile); misuse is a
// usage error.
func TestConsentCommands(t *testing.T) {
	dir := t.TempDir()
	const token = "dpo-token"
	p := startPipeApp(t, pipeConfig(dir, token, "admin", `
consent:
  purposes:
    - {name: analytics, bit: 0, default: denied, segment: [Analytics]}
sinks:
  - {name: analytics, file: {path: {dir}/analytics.ndjson}, consent: {purposes: [analytics], require: all, unknown: deny, decide_by: profile}}
`), token)
	p.send(fmt.Sprintf(`{"type":"track","event":"Viewed","userId":"cust-1","messageId":"m-1","timestamp":%q,"context":{"consent":{"categoryPreferences":{"Analytics":false}}}}`,
		time.Now().UTC().Format(time.RFC3339)))
	code, v := p.call("GET", "/v1/profiles/lookup?type=user_id&value=cust-1", "")
	if code != 200 {
		t.Fatalf("lookup: %d %v", code, v)
	}
	pid := fmt.Sprint(uint32(v["profile_id"].(float64)))
	run := func(args ...string) (int, map[string]any, string) {
		var out, errb bytes.Buffer
		code := cli(append(append([]string{"consent"}, args...), "-addr", p.base, "-token", token), nil, &out, &errb)
		var v map[string]any
		_ = json.Unmarshal(out.Bytes(), &v)
		return code, v, out.String() + errb.String()
	}
	field := func(v map[string]any, path ...string) any {
		var cur any = v
		for _, k := range path {
			m, _ := cur.(map[string]any)
			cur = m[k]
		}
		return cur
	}
	if code, v, msg := run("explain", "-sink", "analytics", "-message-id", "m-1"); code != 0 || v["decision"] != "dropped" || v["reason"] != "consent_denied" {
		t.Fatalf("explain m-1: exit %d: %s", code, msg)
	}
	if code, v, msg := run("show", "-id", pid); code != 0 || field(v, "purposes", "analytics", "status") != "denied" || field(v, "purposes", "analytics", "source") != "segment" {
		t.Fatalf("show: exit %d: %s", code, msg)
	}
	if code, _, msg := run("set", "-id", pid, "analytics=granted", "-expires", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); code != 0 {
		t.Fatalf("set: exit %d: %s", code, msg)
	}
	if code, v, msg := run("show", "-id", pid); code != 0 || field(v, "purposes", "analytics", "status") != "granted" ||
		field(v, "purposes", "analytics", "source") != "api" || field(v, "purposes", "analytics", "expires_at") == nil {
		t.Fatalf("show after set: exit %d: %s", code, msg)
	}
	if code, v, msg := run("explain", "-sink", "analytics", "-id", pid); code != 0 || v["decision"] != "kept" {
		t.Fatalf("explain by profile after the grant: exit %d: %s", code, msg)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"set", "-id", pid, "analytics=maybe"}, "PURPOSE=granted or PURPOSE=denied"},
		{[]string{"set", "-id", pid, "analytics=denied", "-expires", "2030-01-01T00:00:00Z"}, "applies to grants"},
		{[]string{"set", "-id", pid, "analytics=granted", "-expires", "tomorrow"}, "RFC 3339"},
		{[]string{"explain", "-sink", "analytics"}, "one of -message-id and -id"},
		{[]string{"show"}, "needs -id"},
	} {
		if code, _, msg := run(tc.args...); code != 2 || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: exit %d: %s; want 2 naming %q", tc.args, code, msg, tc.want)
		}
	}
	if code, _, msg := run("set", "-id", pid, "nope=granted"); code != 1 || !strings.Contains(msg, "not a purpose") {
		t.Errorf("an unknown purpose: exit %d: %s; want the API's 400", code, msg)
	}
}
