package sink

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		yaml  string
		field string // error prefix; "" = valid
	}{
		{`{name: a, stdout: {}}`, ""},
		{`{name: a, kafka: {topic: events.out}}`, ""},
		{`{name: a, kafka: {topic: t, key: original, compression: zstd, linger: 5ms, client: {brokers: ["k:9092"]}}}`, ""},
		{`{name: a, file: {path: /tmp/x.ndjson}}`, ""},
		{`{name: a, file: {path: /tmp/x.arrows, format: arrow, compression: lz4, sync: false}}`, ""},

		{`{stdout: {}}`, "name:"},
		{`{name: "a b", stdout: {}}`, "name:"},
		{`{name: ` + strings.Repeat("n", 65) + `, stdout: {}}`, "name:"},
		{`{name: a}`, "kafka:"},
		{`{name: a, stdout: }`, "kafka:"}, // null block: not set
		{`{name: a, stdout: {}, file: {path: x}}`, "stdout:"},
		{`{name: a, kafka: {topic: t}, file: {path: x}}`, "file:"},

		{`{name: a, kafka: {}}`, "kafka.topic:"},
		{`{name: a, kafka: {topic: "a/b"}}`, "kafka.topic:"},
		{`{name: a, kafka: {topic: ".."}}`, "kafka.topic:"},
		{`{name: a, kafka: {topic: t, key: user}}`, "kafka.key:"},
		{`{name: a, kafka: {topic: t, compression: gz}}`, `kafka.compression: unknown codec "gz" (want none, gzip, snappy, lz4, zstd)`},
		{`{name: a, kafka: {topic: t, linger: -1ms}}`, "kafka.linger:"},
		{`{name: a, kafka: {topic: t, client: {brokers: [""]}}}`, "kafka.client.brokers[0]:"},
		{`{name: a, kafka: {topic: t, client: {tls: {ca_file: x}}}}`, "kafka.client.tls.ca_file:"},
		{`{name: a, kafka: {topic: t, client: {sasl: {mechanism: oauth}}}}`, "kafka.client.sasl.mechanism:"},
		{`{name: a, kafka: {topic: t, client: {sasl: {mechanism: plain, username: u}}}}`, "kafka.client.sasl.password:"},

		{`{name: a, file: {}}`, "file.path:"},
		{`{name: a, file: {path: "-"}}`, "file.path:"},
		{`{name: a, file: {path: x, format: parquet}}`, "file.format:"},
		{`{name: a, file: {path: x, compression: zstd}}`, "file.compression:"},
		{`{name: a, file: {path: x, format: arrow, compression: snappy}}`, "file.compression:"},
	} {
		var cfg Config
		dec := yaml.NewDecoder(strings.NewReader(c.yaml))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		cfg.Defaults()
		err := cfg.Validate()
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: unexpected error: %v", c.yaml, err)
		case c.field != "" && err == nil:
			t.Errorf("%s: no error, want one naming %s", c.yaml, c.field)
		case c.field != "" && !strings.HasPrefix(err.Error(), c.field):
			t.Errorf("%s: error %q does not start with %q", c.yaml, err, c.field)
		}
	}
}

func TestDeadLetterConfigValidate(t *testing.T) {
	for _, c := range []struct {
		yaml  string
		field string
	}{
		{`{kafka: {topic: dlq}}`, ""},
		{`{file: {path: dlq.ndjson, sync: false}}`, ""},
		{`{}`, "kafka:"},
		{`{kafka: {topic: dlq}, file: {path: x}}`, "file:"},
		{`{kafka: {}}`, "kafka.topic:"},
		{`{kafka: {topic: dlq, compression: brotli}}`, "kafka.compression:"},
		{`{kafka: {topic: dlq, linger: -1s}}`, "kafka.linger:"},
		{`{kafka: {topic: dlq, client: {tls: {enabled: true, key_file: k}}}}`, "kafka.client.tls.cert_file:"},
		{`{file: {path: "-"}}`, "file.path:"},
	} {
		var cfg DeadLetterConfig
		dec := yaml.NewDecoder(strings.NewReader(c.yaml))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("%s: %v", c.yaml, err)
		}
		cfg.Defaults()
		err := cfg.Validate()
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: unexpected error: %v", c.yaml, err)
		case c.field != "" && (err == nil || !strings.HasPrefix(err.Error(), c.field)):
			t.Errorf("%s: error %v, want one naming %s", c.yaml, err, c.field)
		}
	}
}

func TestConfigDefaultsAndYAML(t *testing.T) {
	const doc = `
- name: out
  kafka:
    topic: events.out
    linger: 5ms
    client:
      brokers: [k1:9092, k2:9092]
      sasl: {mechanism: scram-sha-512, username: cdp, password_env: KAFKA_PW}
- name: archive
  file: {path: /data/events.arrows, format: arrow}
- name: lines
  file: {path: /data/events.ndjson, sync: false}
`
	var cfgs []Config
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfgs); err != nil {
		t.Fatal(err)
	}
	for i := range cfgs {
		cfgs[i].Defaults()
		if err := cfgs[i].Validate(); err != nil {
			t.Fatalf("sinks[%d].%v", i, err)
		}
	}
	k := cfgs[0].Kafka
	if k.Key != KeyProfileID || k.Compression != CompressionSnappy || k.Linger != 5*time.Millisecond ||
		k.Client.ClientID != "cdpstream" || len(k.Client.Brokers) != 2 || k.Client.SASL.PasswordEnv != "KAFKA_PW" {
		t.Errorf("kafka defaults: %+v", k)
	}
	if f := cfgs[1].File; f.Compression != CompressionNone || f.Sync == nil || !*f.Sync {
		t.Errorf("arrow defaults: %+v", f)
	}
	if f := cfgs[2].File; f.Format != FormatNDJSON || f.Sync == nil || *f.Sync {
		t.Errorf("ndjson: %+v", f)
	}

	// An unknown field is caught by a strict decoder (the caller's choice).
	dec = yaml.NewDecoder(bytes.NewReader([]byte(`{name: a, kafka: {topic: t, acks: 1}}`)))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "acks") {
		t.Errorf("unknown field: %v", err)
	}
}
