package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/internal/disktest"
	"github.com/cdpstream/cdpstream/internal/promtest"
	"github.com/cdpstream/cdpstream/privacy"
)

// TestErasureEndToEnd: a person with three devices, two emails and a user
// id, merged, with consent and an audience membership, is erased by one
// email through the OpenDSR API. Before, no file of the data directory
// holds any of her identifier or trait values in plain text (they are
// sealed under her profile's key), neither after an access request whose
// record and export hold them (sealed under keys of their own).
// Afterwards no identifier finds anything, no bitmap holds the old
// profile, no file holds her values, copies of her stored traits and
// profile record taken before the erasure cannot be opened with the
// master key (her key is destroyed), her export answers 410, the sink
// that asked got a deletion notice, a new event starts a new profile, and
// the audit trail verifies.
func TestErasureEndToEnd(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"), kfake.SeedTopics(1, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dataDir, outDir := t.TempDir(), t.TempDir() // sinks are downstream: outside the data dir
	notices := filepath.Join(outDir, "notices.ndjson")
	hashedNotices := filepath.Join(outDir, "hashed-notices.ndjson")
	const token = "dpo-token"
	cfgText := fmt.Appendf(nil, `
data_dir: %s
log: {level: error}
source: {kafka: {brokers: [%s], group: erase, topics: [in]}}
batch: {max_rows: 16, max_age: 10ms}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
consent: {purposes: [{name: analytics, bit: 0, default: denied, segment: [analytics]}]}
sinks:
  - {name: out, consent: {}, file: {path: %s}}
  - {name: notices, events: false, records: [deletion], file: {path: %s}}
  - {name: hashed-notices, events: false, records: [deletion], file: {path: %s},
     minimize: {hash: [traits.email, context.traits.email], deny: [context.device, context.externalIds]}}
dead_letter: {file: {path: %s}}
privacy: {poll_interval: 10ms}
audit: {kafka: {topic: audit}}
http:
  addr: "127.0.0.1:0"
  auth: {tokens: [{id: dpo, hash: %s, scopes: [admin]}]}
`, dataDir, brokers[0], filepath.Join(outDir, "out.ndjson"), notices, hashedNotices, filepath.Join(outDir, "dead.ndjson"), engine.HashToken(token))
	cfg, err := parseConfig(cfgText)
	if err != nil {
		t.Fatal(err)
	}
	a, call, produce, stop := startKafkaApp(t, cfg, brokers, token)
	if code, b := call("POST", "/v1/audiences", `{"id":"pro","condition":{"trait":{"path":"plan","op":"eq","value":"pro-tier-7f3a"}}}`); code != http.StatusCreated {
		t.Fatalf("define audience: %d %s", code, b)
	}

	// Jane: three devices, two emails, one user id, consent, a trait.
	values := []string{"jane-user-41", "jane.first@example.com", "jane.second@example.org",
		"anon-phone-9c1", "anon-laptop-77e", "anon-tablet-d04", "device-phone-5b2", "device-laptop-e19", "device-tablet-0aa", "pro-tier-7f3a",
		"jane-street-5d1c"}
	produce(
		`{"type":"identify","anonymousId":"anon-phone-9c1","userId":"jane-user-41","messageId":"1","traits":{"email":"jane.first@example.com","plan":"pro-tier-7f3a","street":"jane-street-5d1c"},"context":{"device":{"id":"device-phone-5b2"},"consent":{"categoryPreferences":{"analytics":true}}}}`,
		`{"type":"track","event":"Viewed","anonymousId":"anon-laptop-77e","messageId":"2","context":{"device":{"id":"device-laptop-e19"}}}`,
		`{"type":"identify","anonymousId":"anon-laptop-77e","userId":"jane-user-41","messageId":"3","traits":{"email":"jane.second@example.org"}}`,
		`{"type":"track","event":"Viewed","anonymousId":"anon-tablet-d04","messageId":"4","context":{"device":{"id":"device-tablet-0aa"}}}`,
		`{"type":"identify","anonymousId":"anon-tablet-d04","userId":"jane-user-41","messageId":"5"}`,
		`{"type":"identify","userId":"bob-user-2","messageId":"6","traits":{"email":"bob@example.com","plan":"free"}}`,
	)
	lookup := func(typ, value string) (int, uint32) {
		code, b := call("GET", "/v1/profiles/lookup?type="+typ+"&value="+url.QueryEscape(value), "")
		var v struct {
			ProfileID uint32 `json:"profile_id"`
		}
		_ = json.Unmarshal(b, &v)
		return code, v.ProfileID
	}
	_, jane := lookup("email", "jane.first@example.com")
	if _, p := lookup("anonymous_id", "anon-tablet-d04"); jane == 0 || p != jane {
		t.Fatalf("Jane's devices are not one profile: %d vs %d", jane, p)
	}
	pid := fmt.Sprint(jane)
	if _, b := call("GET", "/v1/audiences/pro/contains?profile_id="+pid, ""); !bytes.Contains(b, []byte(`"member": true`)) {
		t.Fatalf("Jane is not in the audience: %s", b)
	}

	// At rest only ciphertext, before any erasure. Everything written so
	// far is in the WAL, uncompressed, where a plain value would show;
	// the audience definition, stored in plain, holds the trait value it
	// matches ("pro-tier-7f3a"): the control that the scan sees plain
	// bytes.
	if f := findInDir(t, dataDir, "pro-tier-7f3a"); f == "" {
		t.Fatal("control: the audience definition's value is in no file: the scan cannot see plain bytes")
	}
	for _, v := range append(values[:9:9], values[10], "bob@example.com") {
		if f := findInDir(t, dataDir, v); f != "" {
			t.Errorf("%q in plain in %s before any erasure", v, f)
		}
	}
	// An access request by her first email: its record (while open) and
	// its export hold her values, sealed; the scan still finds none.
	code, b := call("POST", "/opendsr/requests", `{"regulation":"gdpr","subject_request_id":"5d0b3c1a-6e2f-4a7b-8c9d-1e2f3a4b5c6d","subject_request_type":"access",
		"submitted_time":"2026-11-23T09:00:00Z","api_version":"2.0",
		"subject_identities":[{"identity_type":"email","identity_value":"jane.first@example.com","identity_format":"raw"}]}`)
	if code != http.StatusCreated {
		t.Fatalf("access request: %d %s", code, b)
	}
	var status struct {
		Status  string `json:"request_status"`
		Results string `json:"results_url"`
	}
	waitUntilMsg(t, func() bool {
		_, b = call("GET", "/opendsr/requests/5d0b3c1a-6e2f-4a7b-8c9d-1e2f3a4b5c6d", "")
		_ = json.Unmarshal(b, &status)
		return status.Status == "completed"
	}, func() string { return string(b) })
	code, export := call("GET", status.Results, "")
	if code != http.StatusOK || !bytes.Contains(export, []byte("anon-tablet-d04")) || !bytes.Contains(export, []byte("jane-street-5d1c")) {
		t.Fatalf("her export: %d %s", code, export)
	}
	for _, v := range append(values[:9:9], values[10]) {
		if f := findInDir(t, dataDir, v); f != "" {
			t.Errorf("%q in plain in %s after her access request", v, f)
		}
	}

	// Copies of her stored traits (0x29, version 2: sealed) and profile
	// record (0x12, version 2: identifier values in sealed chunks), as a
	// backup would keep them.
	var copies [][]byte
	for _, prefix := range []byte{0x29, 0x12} {
		k := binary.BigEndian.AppendUint32([]byte{prefix}, jane)
		v, closer, err := a.db.Get(k)
		if err != nil {
			t.Fatalf("record %x: %v", k, err)
		}
		copies = append(copies, bytes.Clone(v))
		closer.Close()
	}

	// Erasure by one email.
	code, b = call("POST", "/opendsr/requests", `{"regulation":"gdpr","subject_request_id":"a7c1c5b2-1d2e-4f3a-9b8c-0d1e2f3a4b5c","subject_request_type":"erasure",
		"submitted_time":"2026-11-23T10:00:00Z","api_version":"2.0",
		"subject_identities":[{"identity_type":"email","identity_value":"jane.second@example.org","identity_format":"raw"}]}`)
	if code != http.StatusCreated {
		t.Fatalf("erasure request: %d %s", code, b)
	}
	var last []byte
	waitUntilMsg(t, func() bool {
		_, last = call("GET", "/opendsr/requests/a7c1c5b2-1d2e-4f3a-9b8c-0d1e2f3a4b5c", "")
		var st struct {
			Status string `json:"request_status"`
		}
		_ = json.Unmarshal(last, &st)
		return st.Status == "completed"
	}, func() string { return string(last) })

	for _, id := range [][2]string{{"user_id", "jane-user-41"}, {"email", "jane.first@example.com"}, {"email", "jane.second@example.org"},
		{"anonymous_id", "anon-phone-9c1"}, {"anonymous_id", "anon-laptop-77e"}, {"anonymous_id", "anon-tablet-d04"}, {"device_id", "device-tablet-0aa"}} {
		if code, _ := lookup(id[0], id[1]); code != http.StatusNotFound {
			t.Errorf("lookup %s after erasure: %d, want 404", id[0], code)
		}
	}
	if code, _ := lookup("email", "bob@example.com"); code != http.StatusOK {
		t.Errorf("Bob was erased too: %d", code)
	}
	if _, b := call("GET", "/v1/audiences/pro/contains?profile_id="+pid, ""); !bytes.Contains(b, []byte(`"member": false`)) {
		t.Errorf("the audience still holds the erased profile: %s", b)
	}
	if _, b := call("GET", "/v1/profiles/"+pid+"/consent", ""); bytes.Contains(b, []byte("granted")) {
		t.Errorf("consent of the erased profile is still there: %s", b)
	}

	// Her export went with her.
	if code, _ := call("GET", status.Results, ""); code != http.StatusGone {
		t.Errorf("her export after the erasure: %d, want 410", code)
	}

	// The sink that asked got a deletion notice naming the identifiers.
	data, err := os.ReadFile(notices)
	if err != nil || !bytes.Contains(data, []byte(`"type":"deletion"`)) || !bytes.Contains(data, []byte("anon-tablet-d04")) {
		t.Fatalf("deletion notice: %v %s", err, data)
	}
	// A sink whose events carry emails hashed and no device ids gets
	// the notice that way: the emails as the hashes it holds, no device.
	data, err = os.ReadFile(hashedNotices)
	sum := sha256.Sum256([]byte("jane.first@example.com"))
	if err != nil || !bytes.Contains(data, []byte(`"type":"deletion"`)) || !bytes.Contains(data, []byte("anon-tablet-d04")) ||
		!bytes.Contains(data, []byte(`{"type":"email","value":"`+hex.EncodeToString(sum[:])+`","format":"sha256"}`)) ||
		bytes.Contains(data, []byte("jane.first@example.com")) || bytes.Contains(data, []byte("device-phone-5b2")) {
		t.Fatalf("deletion notice to the minimising sink: %v %s", err, data)
	}

	// A new event from the person starts a new profile.
	produce(`{"type":"identify","userId":"jane-user-41","messageId":"7"}`)
	if _, p := lookup("user_id", "jane-user-41"); p == 0 || p == jane {
		t.Errorf("new event after erasure resolved to %d (old %d), want a new profile", p, jane)
	}
	stop()

	// No file of the data directory holds Jane's old values (the new
	// event brought back only her user id).
	for _, v := range values[1:] {
		if f := findInDir(t, dataDir, v); f != "" {
			t.Errorf("%q still in %s after erasure", v, f)
		}
	}
	// Crypto-shredding: with the master key, a keyring on the store
	// cannot open the copies taken before the erasure: her key is gone
	// (the package tests open the copies before the erasure, and show the
	// wrapped key leaves every file).
	db, err := engine.OpenStore(stateDir(dataDir), cfg.State, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := engine.NewKeyring(cfg.Encryption, db)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range copies {
		if c[0] != 2 || len(c) < 1+engine.SealOverhead {
			t.Errorf("copy %d is not a sealed version (version %d)", i, c[0])
		}
		if _, err := kr.Open(nil, jane, c[1:], nil); !errors.Is(err, engine.ErrKeyDestroyed) {
			t.Errorf("copy %d after the erasure: %v, want engine.ErrKeyDestroyed", i, err)
		}
	}
	// The audit trail's copy on Kafka: every entry, in order, the chain
	// intact, none of Jane's values in it.
	stored, err := privacy.Entries(db, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var mirrored []privacy.Entry
	for _, r := range consumeAll(t, brokers, "audit") {
		var e privacy.Entry
		if err := json.Unmarshal(r.Value, &e); err != nil || string(r.Key) != "audit" {
			t.Fatalf("audit record %q %s: %v", r.Key, r.Value, err)
		}
		for _, v := range values {
			if bytes.Contains(r.Value, []byte(v)) {
				t.Errorf("the audit topic holds %q: %s", v, r.Value)
			}
		}
		mirrored = append(mirrored, e)
	}
	if len(stored) < 10 || !slices.Equal(mirrored, stored) {
		t.Errorf("audit topic: %d entries, the store %d; want the same entries", len(mirrored), len(stored))
	}
	if err := privacy.CheckChain(mirrored); err != nil {
		t.Errorf("the mirrored chain: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(outDir, "c.yaml")
	if err := os.WriteFile(cfgPath, cfgText, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := cli([]string{"audit", "verify", "-config", cfgPath}, nil, &out, &errb); code != 0 {
		t.Fatalf("audit verify: exit %d: %s%s", code, out.String(), errb.String())
	}
}

// findInDir returns the first file under dir that contains s, or "".
func findInDir(t *testing.T, dir, s string) string {
	t.Helper()
	found, err := disktest.FindStrings(dir, s)
	if err != nil {
		t.Fatal(err)
	}
	if f := found[s]; len(f) > 0 {
		return f[0]
	}
	return ""
}

// waitUntilMsg is waitUntil that says what it last saw.
func waitUntilMsg(t *testing.T, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not reached; last: %s", msg())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestErasureSuppressEndToEnd: a person is erased and suppressed by one
// email through the OpenDSR API. A later event carrying only one of her
// old device ids is dropped at ingest (reason suppressed, counted for
// every sink) and reaches no sink. There is no purpose catalogue, hence
// no consent stage and no consent policy: the identity stage alone drops it.
// The data directory keeps no value of hers, only keyed hashes. After
// unsuppress by the same email, the same event is processed as a new
// profile.
func TestErasureSuppressEndToEnd(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	dataDir, outDir := t.TempDir(), t.TempDir()
	out, raw := filepath.Join(outDir, "out.ndjson"), filepath.Join(outDir, "raw.ndjson")
	const token = "dpo-token"
	cfg, err := parseConfig(fmt.Appendf(nil, `
data_dir: %s
log: {level: error}
source: {kafka: {brokers: [%s], group: suppress, topics: [in]}}
batch: {max_rows: 16, max_age: 10ms}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
sinks:
  - {name: out, consent: {}, file: {path: %s}}
  - {name: raw, consent: {}, file: {path: %s}}
  - {name: notices, events: false, records: [deletion], file: {path: %s}}
dead_letter: {file: {path: %s}}
privacy: {poll_interval: 10ms}
http:
  addr: "127.0.0.1:0"
  auth: {tokens: [{id: dpo, hash: %s, scopes: [admin]}]}
`, dataDir, brokers[0], out, raw, filepath.Join(outDir, "notices.ndjson"), filepath.Join(outDir, "dead.ndjson"), engine.HashToken(token)))
	if err != nil {
		t.Fatal(err)
	}
	a, call, produce, stop := startKafkaApp(t, cfg, brokers, token)
	lookup := func(typ, value string) (int, uint32) {
		code, b := call("GET", "/v1/profiles/lookup?type="+typ+"&value="+url.QueryEscape(value), "")
		var v struct {
			ProfileID uint32 `json:"profile_id"`
		}
		_ = json.Unmarshal(b, &v)
		return code, v.ProfileID
	}
	request := func(id, typ string) {
		t.Helper()
		code, b := call("POST", "/opendsr/requests", `{"regulation":"gdpr","subject_request_id":"`+id+`","subject_request_type":"`+typ+`",
			"submitted_time":"2026-11-23T10:00:00Z","api_version":"2.0",
			"subject_identities":[{"identity_type":"email","identity_value":"jane@example.com","identity_format":"raw"}]}`)
		if code != http.StatusCreated {
			t.Fatalf("%s request: %d %s", typ, code, b)
		}
		var last []byte
		waitUntilMsg(t, func() bool {
			_, last = call("GET", "/opendsr/requests/"+id, "")
			var st struct {
				Status string `json:"request_status"`
			}
			_ = json.Unmarshal(last, &st)
			return st.Status == "completed"
		}, func() string { return string(last) })
	}
	sinkIDs := func(path string) []string {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, line := range splitLines(data) {
			ids = append(ids, messageID(t, line))
		}
		return ids
	}

	values := []string{"jane-user-41", "jane@example.com", "anon-phone-9c1", "anon-laptop-77e", "device-phone-5b2", "device-laptop-e19"}
	produce(
		`{"type":"identify","anonymousId":"anon-phone-9c1","userId":"jane-user-41","messageId":"1","traits":{"email":"jane@example.com"},"context":{"device":{"id":"device-phone-5b2"}}}`,
		`{"type":"track","event":"Viewed","anonymousId":"anon-laptop-77e","messageId":"2","context":{"device":{"id":"device-laptop-e19"}}}`,
		`{"type":"identify","anonymousId":"anon-laptop-77e","userId":"jane-user-41","messageId":"3"}`,
		`{"type":"identify","userId":"bob-user-2","messageId":"4"}`,
	)
	_, jane := lookup("device_id", "device-laptop-e19")
	if _, p := lookup("email", "jane@example.com"); jane == 0 || p != jane {
		t.Fatalf("Jane's devices are not one profile: %d vs %d", jane, p)
	}

	request("c9a646d3-9c61-4cb7-bfcd-ee2522c8f633", "erasure_suppress")
	if code, _ := lookup("device_id", "device-laptop-e19"); code != http.StatusNotFound {
		t.Fatalf("lookup after erasure: %d, want 404", code)
	}

	// Her laptop comes back with an event naming only its device id.
	comeback := `{"type":"track","event":"Viewed","anonymousId":"anon-new-3f0","messageId":"5","context":{"device":{"id":"device-laptop-e19"}}}`
	before := a.runner.Stats()
	produce(comeback, `{"type":"track","event":"Viewed","userId":"bob-user-2","messageId":"6"}`)
	after := a.runner.Stats()
	for i, name := range []string{"out", "raw"} {
		if d := after.Dropped[i] - before.Dropped[i]; d != 1 {
			t.Errorf("sink %s: %d more dropped, want 1 (suppressed)", name, d)
		}
	}
	if after.Dropped[2] != 0 {
		t.Errorf("the notices sink, which takes no events, counted %d drops", after.Dropped[2])
	}
	for _, p := range []string{out, raw} {
		if got := strings.Join(sinkIDs(p), ","); got != "1,2,3,4,6" {
			t.Errorf("%s holds %s, want 1,2,3,4,6 (event 5 suppressed)", filepath.Base(p), got)
		}
	}
	for _, id := range [][2]string{{"device_id", "device-laptop-e19"}, {"anonymous_id", "anon-new-3f0"}} {
		if code, _ := lookup(id[0], id[1]); code != http.StatusNotFound {
			t.Errorf("the suppressed event made a profile: lookup %s %d", id[0], code)
		}
	}
	// Suppression keeps keyed hashes only: none of her identifiers is in
	// the data directory, the email included, which is also the request's
	// identity: every version of the request's record holds it sealed
	// under the request's key, destroyed when the request completed.
	for _, v := range values {
		if f := findInDir(t, dataDir, v); f != "" {
			t.Errorf("%q in %s after erase-and-suppress", v, f)
		}
	}
	for _, m := range []struct {
		name   string
		labels map[string]string
	}{
		{"cdp_identity_events_total", map[string]string{"result": "suppressed"}},
		{"cdp_engine_dropped_total", map[string]string{"sink": "out", "reason": "suppressed"}},
		{"cdp_engine_dropped_total", map[string]string{"sink": "raw", "reason": "suppressed"}},
	} {
		if v := promtest.Counter(t, a.reg, m.name, m.labels); v != 1 {
			t.Errorf("%s%v = %v, want 1", m.name, m.labels, v)
		}
	}

	// Unsuppressed by the same email, the same event makes a new profile.
	request("0b3f8a5e-2f6c-4d0e-8f3b-6a1c2d3e4f50", "unsuppress")
	produce(comeback)
	if _, p := lookup("device_id", "device-laptop-e19"); p == 0 || p == jane {
		t.Errorf("event after unsuppress resolved to %d (old %d), want a new profile", p, jane)
	}
	if got := strings.Join(sinkIDs(raw), ","); got != "1,2,3,4,6,5" {
		t.Errorf("raw holds %s, want 1,2,3,4,6,5", got)
	}
	stop()
}
