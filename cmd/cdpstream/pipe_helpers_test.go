package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// pipeApp is an instance reading NDJSON from a pipe, with its HTTP API on
// a loopback port: tests write events with send and call the API with
// call, as the given bearer token.
type pipeApp struct {
	t     *testing.T
	a     *app
	pw    *io.PipeWriter
	base  string
	token string
	stop  func() // graceful, once; also at the test's end
}

// startPipeApp builds the instance of cfgYAML (whose source must be
// file "-") and runs it until the test ends.
func startPipeApp(t *testing.T, cfgYAML []byte, token string) *pipeApp {
	t.Helper()
	cfg, err := parseConfig(cfgYAML)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	a, err := build(cfg, newLogger(cfg, os.Stderr), pr)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.run(t.Context()) }()
	stop := sync.OnceFunc(func() {
		pw.Close()
		<-done
		a.close()
	})
	t.Cleanup(stop)
	return &pipeApp{t: t, a: a, pw: pw, base: "http://" + a.srv.Addr(), token: token, stop: stop}
}

// send writes events and waits until they are processed and committed.
func (p *pipeApp) send(lines ...string) {
	p.t.Helper()
	before := p.a.runner.Stats().Received
	if _, err := io.WriteString(p.pw, strings.Join(lines, "\n")+"\n"); err != nil {
		p.t.Fatal(err)
	}
	waitUntil(p.t, func() bool {
		st := p.a.runner.Stats()
		return st.Received >= before+uint64(len(lines)) && st.Committed == st.Batches
	})
}

// call sends an API request and decodes a JSON object answer.
func (p *pipeApp) call(method, path, body string) (int, map[string]any) {
	p.t.Helper()
	code, b := p.callRaw(method, path, body)
	var v map[string]any
	_ = json.Unmarshal(b, &v)
	return code, v
}

// callRaw sends an API request (or GETs an absolute url) and returns the
// answer's bytes.
func (p *pipeApp) callRaw(method, path, body string) (int, []byte) {
	p.t.Helper()
	return apiCall(p.t, p.base, p.token, method, path, body)
}

// apiCall sends a JSON request with a bearer token to base+path (or to
// path when it is an absolute url) and returns the answer's bytes.
func apiCall(t *testing.T, base, token, method, path, body string) (int, []byte) {
	t.Helper()
	url := path
	if strings.HasPrefix(path, "/") {
		url = base + path
	}
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// completed waits until request id is completed and returns its status.
func (p *pipeApp) completed(id string) map[string]any {
	p.t.Helper()
	var v map[string]any
	waitUntil(p.t, func() bool {
		_, v = p.call("GET", "/opendsr/requests/"+id, "")
		return v["request_status"] == "completed"
	})
	return v
}

// dsrBody is an OpenDSR request about one raw identity.
func dsrBody(id, typ, identityType, value, extensions string) string {
	ext := ""
	if extensions != "" {
		ext = `,"extensions":` + extensions
	}
	return fmt.Sprintf(`{"regulation":"gdpr","subject_request_id":%q,"subject_request_type":%q,"submitted_time":"2026-11-23T10:00:00Z",
		"subject_identities":[{"identity_type":%q,"identity_value":%q,"identity_format":"raw"}],"api_version":"2.0"%s}`, id, typ, identityType, value, ext)
}

// startKafkaApp starts the instance of cfg, whose source reads topic "in"
// of brokers, and returns it with call (the API with token), produce
// (writes events to "in" and waits until they are processed and
// committed) and stop (graceful).
func startKafkaApp(t *testing.T, cfg *Config, brokers []string, token string) (a *app,
	call func(method, path, body string) (int, []byte), produce func(events ...string), stop func()) {
	t.Helper()
	a, done, stop := startApp(t, cfg)
	base := "http://" + a.srv.Addr()
	call = func(method, path, body string) (int, []byte) {
		t.Helper()
		return apiCall(t, base, token, method, path, body)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("in"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	sent := 0
	produce = func(events ...string) {
		t.Helper()
		for _, e := range events {
			if err := prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte(e)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		waitConsumed(t, a, done, uint64(sent))
	}
	return a, call, produce, stop
}

// pipeConfig is the config of a test instance in dir: a pipe source,
// batches of 10 ms, the test identity secret and master key, a
// dead-letter file, HTTP on a free port with one token (id dpo) of the
// given scope, then blocks (sinks, consent, privacy, ...), in which {dir}
// stands for dir.
func pipeConfig(dir, token, scope, blocks string) []byte {
	return fmt.Appendf(nil, `
data_dir: %s
log: {level: error}
source: {file: {path: "-"}}
batch: {max_age: 10ms}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
dead_letter: {file: {path: %s}}
http:
  addr: "127.0.0.1:0"
  auth: {tokens: [{id: dpo, hash: %s, scopes: [%s]}]}
%s`, dir, filepath.Join(dir, "dead.ndjson"), engine.HashToken(token), scope, strings.ReplaceAll(blocks, "{dir}", dir))
}
