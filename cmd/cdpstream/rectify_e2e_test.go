package main

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRectificationAndRetention: a rectification request replaces a
// person's email and corrects a trait in the live instance (lookups, the
// profile view, audiences and the access export follow); retention then
// erases a person nobody has seen for longer than inactive_after, through
// the erasure path, listed with origin "retention" and audited.
func TestRectificationAndRetention(t *testing.T) {
	dir := t.TempDir()
	const token = "dpo-token"
	p := startPipeApp(t, pipeConfig(dir, token, "admin", `
sinks: [{name: out, consent: {}, file: {path: {dir}/out.ndjson}}]
audiences: {definitions: [{id: pro, condition: {trait: {path: plan, op: eq, value: pro}}}]}
privacy: {poll_interval: 10ms, retention: {inactive_after: 720h, interval: 20ms}}
`), token)

	now := time.Now().UTC().Format(time.RFC3339)
	p.send(fmt.Sprintf(`{"type":"identify","userId":"cust-1","messageId":"1","timestamp":%q,"traits":{"email":"jane@exmaple.com","plan":"free","name":"Jane"}}`, now))

	// Rectify, through the terminal command: the misspelt email becomes
	// the right one, plan becomes pro, the name goes, visits is a number.
	var out, errb bytes.Buffer
	if code := cli([]string{"privacy", "submit", "-type", "rectification", "-identity", "controller_customer_id:cust-1",
		"-id", "9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d", "-fix", "email:jane@exmaple.com=Jane@Example.com",
		"-trait", "plan=pro", "-trait", "visits=3", "-unset-trait", "name", "-addr", p.base, "-token", token}, nil, &out, &errb); code != 0 {
		t.Fatalf("privacy submit -type rectification: exit %d: %s%s", code, out.String(), errb.String())
	}
	p.completed("9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d")
	if code, _ := p.call("GET", "/v1/profiles/lookup?type=email&value=jane@exmaple.com", ""); code != http.StatusNotFound {
		t.Errorf("lookup of the old email after rectification: %d, want 404", code)
	}
	code, v := p.call("GET", "/v1/profiles/lookup?type=email&value=jane@example.com", "")
	if code != http.StatusOK {
		t.Fatalf("lookup of the new email: %d %v", code, v)
	}
	pid := v["profile_id"]
	if code, v := p.call("GET", "/v1/audiences/pro/contains?type=user_id&value=cust-1", ""); code != http.StatusOK || v["member"] != true {
		t.Errorf("after rectifying plan to pro: contains %d %v, want a member", code, v)
	}
	// The access export holds the corrected values only.
	if code, v := p.call("POST", "/opendsr/requests", dsrBody("1c9e6679-7425-40de-944b-e07fc1f90ae7", "access", "email", "jane@example.com", "")); code != http.StatusCreated {
		t.Fatalf("access request: %d %v", code, v)
	}
	st := p.completed("1c9e6679-7425-40de-944b-e07fc1f90ae7")
	code, export := p.callRaw("GET", st["results_url"].(string), "")
	if code != http.StatusOK || !strings.Contains(string(export), "jane@example.com") || !strings.Contains(string(export), `"plan": "pro"`) ||
		!strings.Contains(string(export), `"visits": 3`) ||
		strings.Contains(string(export), "exmaple") || strings.Contains(string(export), "Jane\"") {
		t.Fatalf("export after rectification: %d %s", code, export)
	}

	// Retention: Max was last seen 40 days ago; Jane just now.
	old := time.Now().Add(-40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	p.send(fmt.Sprintf(`{"type":"identify","userId":"cust-2","messageId":"2","timestamp":%q,"traits":{"email":"max@example.com"}}`, old))
	waitUntil(t, func() bool {
		code, _ := p.call("GET", "/v1/profiles/lookup?type=user_id&value=cust-2", "")
		return code == http.StatusNotFound
	})
	if code, v := p.call("GET", "/v1/profiles/lookup?type=user_id&value=cust-1", ""); code != http.StatusOK || v["profile_id"] != pid {
		t.Fatalf("Jane after the retention sweep: %d %v, want her profile %v", code, v, pid)
	}
	code, list := p.callRaw("GET", "/opendsr/requests?type=erasure", "")
	if code != http.StatusOK || !strings.Contains(string(list), `"origin": "retention"`) {
		t.Fatalf("listing after retention: %d %s", code, list)
	}
	waitUntil(t, func() bool {
		_, list := p.callRaw("GET", "/opendsr/requests?type=erasure&status=completed", "")
		return strings.Contains(string(list), `"origin": "retention"`)
	})
}

// TestRetentionKeep: just before a retention erasure runs, the graph is
// asked again (inactive.Keep): profiles seen since the cutoff are spared,
// directly or through the profile they merged into; profiles merged into
// one that is inactive too are replaced by it.
func TestRetentionKeep(t *testing.T) {
	dir := t.TempDir()
	const token = "dpo-token"
	p := startPipeApp(t, pipeConfig(dir, token, "admin", `
sinks: [{name: out, consent: {}, file: {path: {dir}/out.ndjson}}]
`), token)
	now := time.Now().UTC()
	old := now.Add(-40 * 24 * time.Hour)
	ev := func(at time.Time, msg, fields string) string {
		return fmt.Sprintf(`{"type":"identify","messageId":%q,"timestamp":%q,%s}`, msg, at.Format(time.RFC3339), fields)
	}
	p.send(ev(old, "1", `"userId":"cust-5"`), ev(old, "2", `"userId":"cust-6"`), ev(old, "3", `"anonymousId":"anon-7"`),
		ev(old, "4", `"userId":"cust-8"`), ev(old, "5", `"anonymousId":"anon-9"`))
	pid := func(typ, value string) uint32 {
		t.Helper()
		code, v := p.call("GET", "/v1/profiles/lookup?type="+typ+"&value="+value, "")
		if code != http.StatusOK {
			t.Fatalf("lookup %s %s: %d %v", typ, value, code, v)
		}
		return uint32(v["profile_id"].(float64))
	}
	p5, p6, p7, p8, p9 := pid("user_id", "cust-5"), pid("user_id", "cust-6"), pid("anonymous_id", "anon-7"), pid("user_id", "cust-8"), pid("anonymous_id", "anon-9")
	before := now.Add(-30 * 24 * time.Hour)
	keep := func(pids ...uint32) string {
		t.Helper()
		k, spared, err := inactive{p.a.graph}.Keep(t.Context(), before, pids)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(k, " spared ", spared)
	}
	if got, want := keep(p5, p6, p7, p8, p9), fmt.Sprint([]uint32{p5, p6, p7, p8, p9}, " spared 0"); got != want {
		t.Fatalf("all inactive: %s, want %s", got, want)
	}
	// cust-5 comes back; cust-6 comes back on anon-7 (merged, active);
	// cust-8 turns out to be anon-9, in an old event (merged, inactive).
	p.send(ev(now, "6", `"userId":"cust-5"`), ev(now, "7", `"userId":"cust-6","anonymousId":"anon-7"`),
		ev(old.Add(time.Hour), "8", `"userId":"cust-8","anonymousId":"anon-9"`))
	survivor := pid("anonymous_id", "anon-9")
	if survivor != pid("user_id", "cust-8") || (survivor != p8 && survivor != p9) {
		t.Fatalf("cust-8 and anon-9 did not merge: %d", survivor)
	}
	if got, want := keep(p5, p6, p7, p8, p9), fmt.Sprint([]uint32{survivor}, " spared 3"); got != want {
		t.Fatalf("after the new events: %s, want %s", got, want)
	}
	// Erased: kept (erasing again is a no-op).
	if err := p.a.graph.Erase(t.Context(), []uint32{survivor}); err != nil {
		t.Fatal(err)
	}
	if got, want := keep(p8, p9), fmt.Sprint([]uint32{p8, p9}, " spared 0"); got != want {
		t.Fatalf("after erasing the survivor: %s, want %s", got, want)
	}
}
