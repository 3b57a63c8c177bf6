package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestExampleConfigIsValid(t *testing.T) {
	t.Setenv("CDPSTREAM_IDENTITY_SECRET", "from-the-environment")
	t.Setenv("CDPSTREAM_MASTER_KEY", "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff")
	cfg, err := loadConfig("../../cdpstream.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.Kafka == nil || len(cfg.Sinks) != 3 || cfg.DeadLetter.Kafka == nil {
		t.Fatalf("example config parsed to %+v", cfg)
	}
	// The kafka sink inherits the source's brokers.
	if got := cfg.Sinks[0].Kafka.Client.Brokers; len(got) != 1 || got[0] != "localhost:9092" {
		t.Fatalf("sink brokers = %v, want the source's", got)
	}
}

func TestBadConfigNamesTheField(t *testing.T) {
	const base = `
identity: {secret: s}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
source: {kafka: {brokers: [b:9092], topics: [in]}}
sinks: [{name: s, consent: {}, stdout: {}}]
dead_letter: {file: {path: /tmp/x}}
`
	for _, tc := range []struct{ yaml, want string }{
		{`source: {kafka: {brokers: [b:9092], topics: [in], strat: earliest}}`, "field strat not found"},
		{`sinks: [{name: s, consent: {}, stdout: {}}]`, "source: set exactly one"},
		{`source: {kafka: {brokers: [b:9092]}}`, "source.kafka.topics"},
		{`source: {kafka: {topics: [t]}}`, "source.kafka.brokers"},
		{`source: {kafka: {brokers: [b], topics: [t], start: middle}}`, "source.kafka.start"},
		{`source: {file: {path: ""}}`, "source.file.path"},
		{base + `log: {level: loud}`, "log.level"},
		{base + `batch: {max_rows: -1}`, "batch.max_rows"},
		{base + `decode: {max_event_bytes: -5}`, "decode.max_event_bytes"},
		{base + `runner: {queue_depth: -1}`, "runner.queue_depth"},
		{base + `http: {addr: "nonsense"}`, "http.addr"},
		{strings.Replace(base, "sinks: [{name: s, consent: {}, stdout: {}}]", "sinks: [{name: s, consent: {}, kafka: {topic: o, compression: gz}}]", 1), "sinks[0].kafka.compression"},
		{strings.Replace(base, "sinks: [{name: s, consent: {}, stdout: {}}]", "sinks: [{name: s, consent: {}, stdout: {}}, {name: s, consent: {}, stdout: {}}]", 1), "sinks[1].name"},
		{strings.Replace(base, "sinks: [{name: s, consent: {}, stdout: {}}]", "sinks: []", 1), "sinks: at least one"},
		{strings.Replace(base, "consent: {}, ", "", 1), "sinks[0].consent: required"},
		{strings.Replace(base, "consent: {}, ", "consent: {purposes: [ads], require: all, unknown: deny, decide_by: profile}, ", 1), "sinks[0].consent.purposes: no purpose catalogue"},
		{base + "consent: {purposes: [{name: analytics, bit: 0, default: denied}]}\n", ""},
		{strings.Replace(base, "consent: {}, ", "consent: {purposes: [ads], require: all, unknown: deny, decide_by: profile}, ", 1) + "consent: {purposes: [{name: analytics, bit: 0, default: denied}]}\n", "sinks[0].consent.purposes[0]: \"ads\" is not in the purpose catalogue"},
		{strings.Replace(base, "consent: {}, ", "consent: {purposes: [analytics], require: most}, ", 1) + "consent: {purposes: [{name: analytics, bit: 0, default: denied}]}\n", "sinks[0].consent.require"},
		{base + "consent: {purposes: [{name: analytics, bit: 0}]}\n", "consent.purposes[0].default"},
		{base + "privacy: {retention: {inactive_after: 720h, batch: -1}}\n", "privacy.retention.batch"},
		{base + "privacy: {retention: {interval: -1h}}\n", "privacy.retention.interval"},
		{base + "audit: {kafka: {topic: \"\"}}\n", "audit.kafka.topic"},
		{base + "audit: {kafka: {topic: a, compression: gz}}\n", "audit.kafka.compression"},
		{base + "audiences: {definitions: [{id: vip, condition: {trait: {path: plan, op: eq, value: pro}}}]}\n", ""},
		{base + "audiences: {definitions: [{id: vip, conditon: {trait: {path: plan, op: eq, value: pro}}}]}\n", "audiences.definitions[0]:"},
		{strings.Replace(base, "dead_letter: {file: {path: /tmp/x}}", "", 1), "dead_letter."},
		{strings.Replace(base, "identity: {secret: s}", "identity: {secret_env: CDPSTREAM_TEST_UNSET_SECRET}", 1), "identity.secret"},
		{strings.Replace(base, "encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}", "", 1), "encryption.master_key: must be set, or the environment variable named by master_key_env (CDPSTREAM_MASTER_KEY)"},
		{strings.Replace(base, "encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}", "encryption: {master_key_env: CDPSTREAM_TEST_UNSET_MASTER}", 1), "encryption.master_key: must be set"},
		{strings.Replace(base, "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff", "not-a-key", 1), "encryption.master_key: must be 32 bytes written as 64 hex digits or as base64"},
		{strings.Replace(base, "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff", "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccdd", 1), "encryption.master_key: must be 32 bytes"},
		{strings.Replace(base, "encryption: {master_key: ", "encryption: {cache_entries: -1, master_key: ", 1), "encryption.cache_entries"},
	} {
		_, err := parseConfig([]byte(tc.yaml))
		if tc.want == "" {
			if err != nil {
				t.Errorf("config %q: %v, want it valid", tc.yaml, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
}

func TestCLIUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := cli([]string{"frobnicate"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("unknown command: exit %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := cli([]string{"version"}, nil, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "cdpstream ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
	errb.Reset()
	if code := cli([]string{"run", "-config", "/nonexistent.yaml"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "cannot read config") {
		t.Fatalf("missing config: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := cli([]string{"demo", "-rate", "-1"}, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-rate") {
		t.Fatalf("bad demo flag: exit %d, %q", code, errb.String())
	}
	// Every command group answers -h with its usage and exit 0.
	for _, group := range []string{"profile", "audience", "consent", "privacy", "audit", "keys"} {
		errb.Reset()
		if code := cli([]string{group, "-h"}, nil, &out, &errb); code != 0 || !strings.Contains(errb.String(), "cdpstream "+group+" ") {
			t.Errorf("%s -h: exit %d, %q", group, code, errb.String())
		}
	}
}

// TestRunFileSource is a backfill: NDJSON from standard input through the
// whole pipeline into a file sink and a dead-letter file.
func TestRunFileSource(t *testing.T) {
	dir := t.TempDir()
	out, dead := filepath.Join(dir, "out.ndjson"), filepath.Join(dir, "dead.ndjson")
	cfgPath := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgPath, []byte(`
data_dir: `+dir+`
source: {file: {path: "-"}}
sinks: [{name: out, consent: {}, file: {path: `+out+`}}]
dead_letter: {file: {path: `+dead+`}}
http: {addr: "127.0.0.1:0"}
identity: {secret: test-secret}
encryption: {master_key: 0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	in := strings.Join([]string{
		`{"type":"track","event":"A","userId":"u1","messageId":"m1"}`,
		``,
		`{"type":"track","userId":"u1","messageId":"m2"}`,
		`{"type":"identify","anonymousId":"a1","messageId":"m3","traits":{"email":"x@example.com"}}`,
		`not json`,
	}, "\n")
	var stdout, stderr bytes.Buffer
	if code := cli([]string{"run", "-config", cfgPath}, strings.NewReader(in), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"track","event":"A","userId":"u1","messageId":"m1"}` + "\n" +
		`{"type":"identify","anonymousId":"a1","messageId":"m3","traits":{"email":"x@example.com"}}` + "\n"; string(got) != want {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want)
	}
	var reasons []string
	data, err := os.ReadFile(dead)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range splitLines(data) {
		var d struct {
			Reason string `json:"reason"`
			Source struct {
				Offset int64 `json:"offset"`
			} `json:"source"`
		}
		if err := json.Unmarshal(line, &d); err != nil {
			t.Fatal(err)
		}
		reasons = append(reasons, d.Reason+"@"+strconv.FormatInt(d.Source.Offset, 10))
	}
	if strings.Join(reasons, ",") != "missing_event@3,malformed_json@5" {
		t.Fatalf("dead letters = %v", reasons)
	}
}
