package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

// TestKeysRotate: `cdpstream keys rotate` on a stopped instance re-wraps
// its store's data keys under a new master key: the instance then starts
// only with the new key and reads the traits it sealed before; while the
// instance runs the command refuses (the store is locked); run again it
// changes nothing.
func TestKeysRotate(t *testing.T) {
	const (
		oldKey = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff"
		newKey = "8899aabbccddeeff00112233445566770f1e2d3c4b5a69788796a5b4c3d2e1f0"
		token  = "dpo-token"
	)
	dir := t.TempDir()
	cfgText := fmt.Appendf(nil, `
data_dir: %s
log: {level: error}
source: {file: {path: "-"}}
batch: {max_age: 10ms}
identity: {secret: test-secret}
encryption: {master_key_env: CDPSTREAM_TEST_MASTER_KEY}
sinks: [{name: out, consent: {}, file: {path: %s}}]
dead_letter: {file: {path: %s}}
http:
  addr: "127.0.0.1:0"
  auth: {tokens: [{id: dpo, hash: %s, scopes: [admin]}]}
`, dir, filepath.Join(dir, "out.ndjson"), filepath.Join(dir, "dead.ndjson"), engine.HashToken(token))
	cfgPath := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgPath, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CDPSTREAM_TEST_MASTER_KEY", oldKey)
	t.Setenv("CDPSTREAM_NEW_MASTER_KEY", newKey)
	rotate := func() (int, string) {
		var out, errb bytes.Buffer
		code := cli([]string{"keys", "rotate", "-config", cfgPath}, nil, &out, &errb)
		return code, out.String() + errb.String()
	}
	view := func(p *pipeApp) string {
		code, v := p.call("GET", "/v1/profiles/lookup?type=user_id&value=cust-1", "")
		if code != http.StatusOK {
			t.Fatalf("lookup: %d %v", code, v)
		}
		code, b := p.callRaw("GET", fmt.Sprintf("/v1/profiles/%d", uint32(v["profile_id"].(float64))), "")
		if code != http.StatusOK {
			t.Fatalf("profile view: %d %s", code, b)
		}
		return string(b)
	}

	p := startPipeApp(t, cfgText, token)
	p.send(fmt.Sprintf(`{"type":"identify","userId":"cust-1","messageId":"1","timestamp":%q,"traits":{"email":"jane@example.com","plan":"pro-7c1d"}}`,
		time.Now().UTC().Format(time.RFC3339)))
	if v := view(p); !strings.Contains(v, "pro-7c1d") {
		t.Fatalf("profile view before the rotation lacks the trait: %s", v)
	}
	if code, msg := rotate(); code != 1 || !strings.Contains(msg, "running") {
		t.Fatalf("rotation while the instance runs: exit %d: %s; want 1, naming a running cdpstream", code, msg)
	}
	p.stop()

	code, msg := rotate()
	if code != 0 || !strings.Contains(msg, "re-wrapped") {
		t.Fatalf("keys rotate: exit %d: %s", code, msg)
	}
	cfg, err := parseConfig(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := build(cfg, newLogger(cfg, os.Stderr), strings.NewReader("")); !errors.Is(err, engine.ErrMasterKeyMismatch) {
		if a != nil {
			a.close()
		}
		t.Fatalf("start with the old key after the rotation: %v, want ErrMasterKeyMismatch", err)
	}
	t.Setenv("CDPSTREAM_TEST_MASTER_KEY", newKey)
	p2 := startPipeApp(t, cfgText, token)
	if v := view(p2); !strings.Contains(v, "pro-7c1d") {
		t.Fatalf("profile view after the rotation lacks the trait: %s", v)
	}
	p2.stop()
	// The config now names the new key: rotating to it again is refused;
	// rotating with the old key as the current one is a no-op.
	if code, msg := rotate(); code != 1 || !strings.Contains(msg, "is the current one") {
		t.Fatalf("rotation to the key in use: exit %d: %s", code, msg)
	}
	t.Setenv("CDPSTREAM_TEST_MASTER_KEY", oldKey)
	if code, msg := rotate(); code != 0 || !strings.Contains(msg, "already under the new master key") {
		t.Fatalf("second rotation: exit %d: %s", code, msg)
	}
}
