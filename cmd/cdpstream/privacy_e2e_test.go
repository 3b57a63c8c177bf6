package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivacyRequests drives OpenDSR requests against the live pipeline:
// an access request exports what the graph, consent and audiences hold;
// the store holds the exports and the requests' identities only sealed,
// also while a request waits (an erasure in its waiting period, then
// cancelled); a suppress request makes every sink drop the person's later
// events (see TestErasureEndToEnd for erasure, TestErasureSuppressEndToEnd
// for erase-and-suppress).
func TestPrivacyRequests(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.ndjson")
	const token = "dpo-token"
	p := startPipeApp(t, pipeConfig(dir, token, "privacy:write", `
consent: {purposes: [{name: analytics, bit: 0, default: granted}]}
sinks: [{name: out, consent: {}, file: {path: {dir}/out.ndjson}}]
privacy: {poll_interval: 10ms, waiting_period: 1h}
`), token)
	a, base, send, call, completed := p.a, p.base, p.send, p.call, p.completed
	send(`{"type":"identify","userId":"cust-123","anonymousId":"a-1","messageId":"1","traits":{"email":"jane@example.com"}}`,
		`{"type":"track","event":"Viewed","userId":"someone-else","messageId":"2"}`)
	request := func(id, typ string) string { return dsrBody(id, typ, "controller_customer_id", "cust-123", "") }

	// Access: the export holds the person's identifiers, in plain text
	// (it is their own data), and nothing of the other person.
	if code, v := call("POST", "/opendsr/requests", request("0f8fad5b-d9cb-469f-a165-70867728950e", "access")); code != http.StatusCreated {
		t.Fatalf("access request: %d %v", code, v)
	}
	st := completed("0f8fad5b-d9cb-469f-a165-70867728950e")
	url, _ := st["results_url"].(string)
	if url == "" {
		t.Fatalf("completed access request without results_url: %v", st)
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token) // exports are personal data
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	export, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(export), "jane@example.com") || !strings.Contains(string(export), "cust-123") || strings.Contains(string(export), "someone-else") {
		t.Fatalf("export: %d %s", resp.StatusCode, export)
	}

	// The same person by the SHA-256 of her email (identity_format
	// sha256: the trimmed, lowercased email) reaches the same profile.
	sum := sha256.Sum256([]byte("jane@example.com"))
	hashed := `{"regulation":"gdpr","subject_request_id":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","subject_request_type":"access","submitted_time":"2026-11-23T10:00:00Z",
		"subject_identities":[{"identity_type":"email","identity_value":"` + hex.EncodeToString(sum[:]) + `","identity_format":"sha256"}],"api_version":"2.0"}`
	if code, v := call("POST", "/opendsr/requests", hashed); code != http.StatusCreated {
		t.Fatalf("access request by sha256: %d %v", code, v)
	}
	st = completed("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
	req, _ = http.NewRequest("GET", st["results_url"].(string), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	export, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(export), "cust-123") {
		t.Fatalf("export by sha256 identity: %d %s", resp.StatusCode, export)
	}
	// The request records and the two exports hold her values sealed (as
	// do the profile and the traits): no file of the store shows them.
	for _, v := range []string{"cust-123", "jane@example.com"} {
		if f := findInDir(t, stateDir(dir), v); f != "" {
			t.Errorf("%q in plain in %s after the access requests", v, f)
		}
	}
	// An erasure waiting (waiting_period) is an open record on disk: its
	// id is there in plain (the control that the scan sees plain bytes),
	// its identity is not. Cancelled, it finishes.
	const waiting = "e4b1c2d3-5f6a-4b7c-8d9e-0a1b2c3d4e5f"
	if code, v := call("POST", "/opendsr/requests", dsrBody(waiting, "erasure", "email", "waiting-7e3b@example.com", "")); code != http.StatusCreated {
		t.Fatalf("erasure request: %d %v", code, v)
	}
	if f := findInDir(t, stateDir(dir), waiting); f == "" {
		t.Fatal("control: the waiting request's id is in no file: the scan cannot see plain bytes")
	}
	if f := findInDir(t, stateDir(dir), "waiting-7e3b@example.com"); f != "" {
		t.Errorf("the waiting request's identity is in plain in %s", f)
	}
	if code, v := call("DELETE", "/opendsr/requests/"+waiting, ""); code != http.StatusAccepted {
		t.Fatalf("cancel: %d %v", code, v)
	}

	// Suppress, through the terminal command: the person's later events
	// are dropped for every sink.
	var cliOut, cliErr bytes.Buffer
	if code := cli([]string{"privacy", "submit", "-type", "suppress", "-identity", "controller_customer_id:cust-123",
		"-id", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "-addr", base, "-token", token}, nil, &cliOut, &cliErr); code != 0 {
		t.Fatalf("privacy submit: exit %d: %s", code, cliErr.String())
	}
	completed("6ba7b810-9dad-11d1-80b4-00c04fd430c8")
	cliOut.Reset()
	if code := cli([]string{"privacy", "status", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "-addr", base, "-token", token}, nil, &cliOut, &cliErr); code != 0 || !strings.Contains(cliOut.String(), "completed") {
		t.Fatalf("privacy status: exit %d: %s%s", code, cliOut.String(), cliErr.String())
	}
	cliOut.Reset()
	if code := cli([]string{"privacy", "list", "-type", "suppress", "-status", "completed", "-addr", base, "-token", token}, nil, &cliOut, &cliErr); code != 0 ||
		!strings.Contains(cliOut.String(), `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`) || strings.Contains(cliOut.String(), "cust-123") {
		t.Fatalf("privacy list: exit %d: %s%s (want the request, without its identity)", code, cliOut.String(), cliErr.String())
	}
	if code := cli([]string{"privacy", "list", "-status", "finished", "-addr", base, "-token", token}, nil, &cliOut, &cliErr); code != 1 || !strings.Contains(cliErr.String(), "status") {
		t.Fatalf("privacy list -status finished: exit %d, stderr %q; want 1 naming status", code, cliErr.String())
	}
	cliErr.Reset()
	if code := cli([]string{"privacy", "cancel", "6ba7b810-9dad-11d1-80b4-00c04fd430c8", "-addr", base, "-token", token}, nil, &cliOut, &cliErr); code != 1 ||
		!strings.Contains(cliErr.String(), "only a pending request can be cancelled") {
		t.Fatalf("cancel of a completed request: exit %d, %q; want 1 with the OpenDSR error's message", code, cliErr.String())
	}
	send(`{"type":"track","event":"Viewed","userId":"cust-123","messageId":"3"}`,
		`{"type":"track","event":"Viewed","userId":"someone-else","messageId":"4"}`)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range splitLines(data) {
		ids = append(ids, messageID(t, line))
	}
	if strings.Join(ids, ",") != "1,2,4" {
		t.Fatalf("sink received %v; want the suppressed person's event 3 dropped", ids)
	}
	if st := a.runner.Stats(); st.Dropped[0] != 1 {
		t.Fatalf("dropped = %d, want 1 (suppressed)", st.Dropped[0])
	}
}
