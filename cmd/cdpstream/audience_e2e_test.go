package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// TestAudiencesEndToEnd: an audience defined over the authenticated HTTP
// API, events through kfake, membership visible over HTTP, and entered and
// exited records in an output topic.
func TestAudiencesEndToEnd(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.SeedTopics(1, "changes"), kfake.SeedTopics(1, "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dir := t.TempDir()
	const writer, reader = "writer-secret", "reader-secret"
	cfg, err := parseConfig(fmt.Appendf(nil, `
data_dir: %s
log: {level: error}
source: {kafka: {brokers: [%s], group: aud, topics: [in]}}
batch: {max_rows: 64, max_age: 10ms}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
sinks:
  - {name: changes, events: false, records: [audience], kafka: {topic: changes, key: profile_id}}
dead_letter: {kafka: {topic: dlq}}
audiences:
  definitions:
    - {id: from_config, condition: {trait: {path: plan, op: exists}}}
http:
  addr: "127.0.0.1:0"
  auth:
    tokens:
      - {id: builder, hash: %s, scopes: [audiences:write, audiences:read, profiles:read]}
      - {id: viewer, hash: %s, scopes: [audiences:read]}
`, dir, brokers[0], engine.HashToken(writer), engine.HashToken(reader)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := build(cfg, newLogger(cfg, os.Stderr), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if err := a.close(); err != nil {
			t.Error(err)
		}
	}()
	base := "http://" + a.srv.Addr()
	call := func(method, path, token, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	def := `{"id":"pro","condition":{"trait":{"path":"plan","op":"eq","value":"pro"}}}`
	if code, _ := call("POST", "/v1/audiences", "", def); code != http.StatusUnauthorized {
		t.Fatalf("create without a token: %d, want 401", code)
	}
	if code, _ := call("POST", "/v1/audiences", reader, def); code != http.StatusForbidden {
		t.Fatalf("create with a read-only token: %d, want 403", code)
	}
	if code, body := call("POST", "/v1/audiences", writer, def); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	if code, body := call("POST", "/v1/audiences", writer, `{"id":"bad","condition":{"trait":{"path":"plan","op":"like"}}}`); code != http.StatusBadRequest || !strings.Contains(body, "condition.trait.op") {
		t.Fatalf("invalid definition: %d %s", code, body)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	produce := func(events ...string) {
		for _, e := range events {
			if err := prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte(e)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(
		`{"type":"identify","userId":"ann","messageId":"1","traits":{"plan":"pro"}}`,
		`{"type":"identify","userId":"bob","messageId":"2","traits":{"plan":"free"}}`,
		`{"type":"identify","userId":"cid","messageId":"3","traits":{"plan":"pro"}}`,
	)
	size := func() uint64 {
		code, body := call("GET", "/v1/audiences/pro", reader, "")
		if code != http.StatusOK {
			t.Fatalf("get audience: %d %s", code, body)
		}
		var info struct {
			Size uint64 `json:"size"`
		}
		_ = json.Unmarshal([]byte(body), &info)
		return info.Size
	}
	waitUntil(t, func() bool { return size() == 2 })
	code, body := call("GET", "/v1/audiences/pro/contains?type=user_id&value=ann", reader, "")
	if code != http.StatusOK || !strings.Contains(body, `"member": true`) {
		t.Fatalf("contains ann: %d %s", code, body)
	}
	produce(`{"type":"identify","userId":"ann","messageId":"4","traits":{"plan":"free"}}`)
	waitUntil(t, func() bool { return size() == 1 })
	code, body = call("GET", "/v1/audiences/pro/members", reader, "")
	// One member line, then the cursor line.
	if code != http.StatusOK || !strings.HasPrefix(body, `{"profile_id":`) || strings.Count(body, `"profile_id"`) != 1 || !strings.Contains(body, `"more":false`) {
		t.Fatalf("members: %d %q", code, body)
	}

	// One person: masked identifiers, traits, memberships.
	var cidPID uint32
	{
		code, body := call("GET", "/v1/audiences/pro/members", reader, "")
		var first struct {
			ProfileID uint32 `json:"profile_id"`
		}
		_ = json.Unmarshal([]byte(strings.SplitN(body, "\n", 2)[0]), &first)
		cidPID = first.ProfileID
		if code != http.StatusOK || cidPID == 0 {
			t.Fatalf("members: %d %q", code, body)
		}
	}
	if code, body := call("GET", fmt.Sprintf("/v1/profiles/%d", cidPID), reader, ""); code != http.StatusForbidden {
		t.Fatalf("profile with an audiences-only token: %d %s, want 403", code, body)
	}
	code, body = call("GET", fmt.Sprintf("/v1/profiles/%d", cidPID), writer, "")
	var view struct {
		Identifiers []struct{ Type, Value string }
		Traits      map[string]any
		Audiences   []string
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil || code != http.StatusOK {
		t.Fatalf("profile view: %d %s", code, body)
	}
	// from_config is defined in the config file (plan exists).
	if view.Traits["plan"] != "pro" || strings.Join(view.Audiences, ",") != "from_config,pro" || len(view.Identifiers) != 1 || view.Identifiers[0].Value == "cid" {
		t.Fatalf("profile view = %+v, want plan pro, audiences from_config and pro, one masked user id", view)
	}

	// Members as an identifier type, for activation tools.
	code, body = call("GET", "/v1/audiences/pro/members?as=user_id", reader, "")
	if code != http.StatusOK || !strings.Contains(body, `"user_id":["cid"]`) {
		t.Fatalf("members as user_id: %d %q", code, body)
	}

	// The same through the terminal commands.
	cliOut := func(args ...string) string {
		var out, errb bytes.Buffer
		if code := cli(append(append([]string{"audience"}, args...), "-addr", base, "-token", reader), nil, &out, &errb); code != 0 {
			t.Fatalf("audience %v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}
	if got := cliOut("size", "pro"); got != "1\n" {
		t.Fatalf("audience size = %q", got)
	}
	if got := cliOut("query", "pro AND NOT pro"); !strings.Contains(got, `"count": 0`) {
		t.Fatalf("audience query = %s", got)
	}
	if got := cliOut("list"); !strings.Contains(got, `"pro"`) || !strings.Contains(got, `"from_config"`) {
		t.Fatalf("audience list = %s", got)
	}
	var errb bytes.Buffer
	if code := cli([]string{"audience", "create", "-f", "-", "-addr", base, "-token", reader}, strings.NewReader(def), io.Discard, &errb); code != 1 || !strings.Contains(errb.String(), "403") {
		t.Fatalf("create with a read-only token: exit %d: %s", code, errb.String())
	}

	// Entered: ann and cid; exited: ann.
	var changes []string
	waitUntil(t, func() bool {
		changes = changes[:0]
		for _, r := range consumeAll(t, brokers, "changes") {
			var ch struct {
				Type     string `json:"type"`
				Audience string `json:"audience"`
				Entered  bool   `json:"entered"`
			}
			if err := json.Unmarshal(r.Value, &ch); err != nil || ch.Type != "audience" {
				t.Fatalf("change record %s: %v", r.Value, err)
			}
			if ch.Audience == "pro" {
				changes = append(changes, fmt.Sprint(ch.Entered))
			}
		}
		return len(changes) >= 3
	})
	if got := strings.Join(changes, ","); got != "true,true,false" {
		t.Fatalf("audience records entered = %s, want true,true,false", got)
	}
}

// waitUntil polls cond (the pipeline is asynchronous); it fails after a
// minute, which only a hang reaches.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
