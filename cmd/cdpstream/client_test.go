package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// TestProfileCommands runs the pipeline on a pipe (a file source on
// standard input), feeds a person who logs in on two devices, and drives
// the profile commands against the live HTTP API over a real socket.
func TestProfileCommands(t *testing.T) {
	dir := t.TempDir()
	cfgText := []byte(`
data_dir: ` + dir + `
log: {level: warn}
source: {file: {path: "-"}}
batch: {max_age: 10ms}
sinks: [{name: out, consent: {}, file: {path: ` + filepath.Join(dir, "out.ndjson") + `}}]
dead_letter: {file: {path: ` + filepath.Join(dir, "dead.ndjson") + `}}
http: {addr: "127.0.0.1:0"}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
`)
	cfg, err := parseConfig(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	a, err := build(cfg, newLogger(cfg, os.Stderr), pr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.run(context.Background()) }()
	events := []string{
		`{"type":"track","event":"Viewed","anonymousId":"anon-phone","messageId":"1","timestamp":"2026-01-01T10:00:00Z"}`,
		`{"type":"identify","userId":"ada","anonymousId":"anon-phone","messageId":"2","timestamp":"2026-01-01T10:01:00Z","traits":{"email":"Ada@Example.com"}}`,
		`{"type":"track","event":"Viewed","anonymousId":"anon-laptop","messageId":"3","timestamp":"2026-01-02T10:00:00Z"}`,
		`{"type":"identify","userId":"ada","anonymousId":"anon-laptop","messageId":"4","timestamp":"2026-01-02T10:01:00Z"}`,
	}
	if _, err := io.WriteString(pw, strings.Join(events, "\n")+"\n"); err != nil {
		t.Fatal(err)
	}
	for a.runner.Stats().Committed == 0 || a.runner.Stats().Received < 4 || a.runner.Stats().Committed < a.runner.Stats().Batches {
		time.Sleep(5 * time.Millisecond)
	}
	addr := "http://" + a.srv.Addr()
	profile := func(args ...string) (map[string]any, int, string) {
		var out, errb bytes.Buffer
		code := cli(append([]string{"profile"}, append(args, "-addr", addr)...), nil, &out, &errb)
		var v map[string]any
		if code == 0 {
			if err := json.Unmarshal(out.Bytes(), &v); err != nil {
				t.Fatalf("profile %v printed %q: %v", args, out.String(), err)
			}
		}
		return v, code, errb.String()
	}

	v, code, msg := profile("lookup", "-type", "email", "-value", "ada@example.com")
	if code != 0 {
		t.Fatalf("lookup by email: exit %d: %s", code, msg)
	}
	pid := v["profile_id"].(float64)
	if n := len(v["identifiers"].([]any)); n != 4 { // user id, email, two anonymous ids
		t.Fatalf("profile has %d identifiers, want 4: %v", n, v)
	}
	if strings.Contains(strings.ToLower(toJSON(v)), "ada@example.com") {
		t.Fatalf("lookup shows the email in clear: %v", v)
	}
	if v2, _, _ := profile("lookup", "-id", ftoa(pid)); v2["profile_id"] != pid {
		t.Fatalf("lookup by id = %v", v2)
	}

	if _, code, msg = profile("split", "-id", ftoa(pid)); code != 0 {
		t.Fatalf("split: exit %d: %s", code, msg)
	}
	after, _, _ := profile("lookup", "-type", "anonymous_id", "-value", "anon-laptop")
	if after["profile_id"] == pid {
		t.Fatalf("after split the laptop still resolves to profile %v", pid)
	}

	if _, code, msg = profile("remove-identifier", "-type", "anonymous_id", "-value", "anon-phone"); code != 0 {
		t.Fatalf("remove-identifier: exit %d: %s", code, msg)
	}
	if _, code, msg = profile("lookup", "-type", "anonymous_id", "-value", "anon-phone"); code != 1 || !strings.Contains(msg, "404") {
		t.Fatalf("lookup of a removed identifier: exit %d: %s", code, msg)
	}
	if _, code, msg = profile("lookup", "-type", "email"); code != 2 || !strings.Contains(msg, "-type and -value") {
		t.Fatalf("lookup with -type only: exit %d: %s", code, msg)
	}

	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := a.close(); err != nil {
		t.Fatal(err)
	}

	// Each of those six requests touched personal data: each is in the
	// hash-chained audit trail, which verifies, and fails once altered.
	cfgPath := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgPath, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := cli([]string{"audit", "verify", "-config", cfgPath}, nil, &out, &errb); code != 0 || !strings.Contains(out.String(), "audit trail intact: 6 entries") {
		t.Fatalf("audit verify: exit %d: %s%s", code, out.String(), errb.String())
	}
	out.Reset()
	// No identity in the trail: the user id "ada" as a word (a hex target
	// hash may hold the letters), the email, the anonymous ids.
	if code := cli([]string{"audit", "list", "-config", cfgPath}, nil, &out, &errb); code != 0 || regexp.MustCompile(`(?i)\bada\b|anon-(phone|laptop)`).MatchString(out.String()) || !strings.Contains(out.String(), "POST /v1/profiles/split") {
		t.Fatalf("audit list: exit %d:\n%s", code, out.String())
	}
	tamperAuditEntry(t, stateDir(dir))
	errb.Reset()
	if code := cli([]string{"audit", "verify", "-config", cfgPath}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "audit") {
		t.Fatalf("audit verify after tampering: exit %d: %s", code, errb.String())
	}
}

// tamperAuditEntry flips one byte in the value of the second audit entry
// (key family 0x30).
func tamperAuditEntry(t *testing.T, dir string) {
	t.Helper()
	db, err := engine.OpenStore(dir, engine.StoreConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{0x30}, UpperBound: []byte{0x31}})
	if err != nil {
		t.Fatal(err)
	}
	it.First()
	if !it.Next() {
		t.Fatal("fewer than two audit entries")
	}
	k, v := bytes.Clone(it.Key()), bytes.Clone(it.Value())
	it.Close()
	v[len(v)/2] ^= 1
	if err := db.Set(k, v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func ftoa(f float64) string { b, _ := json.Marshal(f); return string(b) }
