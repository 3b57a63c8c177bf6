package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/engine/sink"
	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/ingest"
	"github.com/cdpstream/cdpstream/privacy"
	"github.com/cdpstream/cdpstream/segments"
	"github.com/cdpstream/cdpstream/segments/audience"
)

// Config is the YAML file of `cdpstream run`. Each block is the Config of
// the package that owns it; this type only composes them and prefixes
// their validation errors with the block's path.
type Config struct {
	// DataDir holds the instance's state (Pebble). Default "./data".
	DataDir string             `yaml:"data_dir"`
	State   engine.StoreConfig `yaml:"state"`
	Log     struct {
		// Level: debug, info (default), warn, error.
		Level string `yaml:"level"`
		// Format: text (default) or json.
		Format string `yaml:"format"`
	} `yaml:"log"`
	Source struct {
		Kafka *ingest.KafkaConfig `yaml:"kafka"`
		File  *ingest.FileConfig  `yaml:"file"`
	} `yaml:"source"`
	Decode     ingest.DecodeConfig   `yaml:"decode"`
	Batch      ingest.BatchConfig    `yaml:"batch"`
	Runner     engine.RunnerConfig   `yaml:"runner"`
	Sinks      []sinkConfig          `yaml:"sinks"`
	DeadLetter sink.DeadLetterConfig `yaml:"dead_letter"`
	Identity   identity.Config       `yaml:"identity"`
	// Encryption holds the master key that wraps the per-profile keys
	// under which identifier values and traits are sealed at rest.
	// Required, like identity.secret: `run` refuses to start without it.
	Encryption engine.EncryptionConfig `yaml:"encryption"`
	// Consent is the purpose catalogue; without purposes the consent stage
	// is off and sinks may only state `consent: {}`.
	Consent segments.Config `yaml:"consent"`
	// Audiences tunes the audience store. Audiences are defined over the
	// HTTP API (or `cdpstream audience create`), or here.
	Audiences audiencesConfig `yaml:"audiences"`
	// Privacy configures data subject requests (OpenDSR API).
	Privacy privacy.Config `yaml:"privacy"`
	// Audit mirrors the hash-chained audit trail to a Kafka topic.
	Audit struct {
		// Kafka: each committed entry, as JSON (privacy.Entry), keyed
		// "audit" so the copy keeps the trail's order on one partition.
		// nil (default): no mirror; the trail lives in the store.
		Kafka *sink.DeadLetterKafkaConfig `yaml:"kafka"`
	} `yaml:"audit"`
	HTTP engine.ServerConfig `yaml:"http"`
}

// audiencesConfig is the audiences block: the store's settings, plus
// definitions to create (or update, when they changed) at start.
type audiencesConfig struct {
	audience.Config `yaml:",inline"`
	// Definitions are audience definitions with the API's JSON shape,
	// written in YAML.
	Definitions []map[string]any `yaml:"definitions"`
	parsed      []audience.Definition
}

// parseDefinitions checks every definition as the API would, naming the
// bad one.
func (c *audiencesConfig) parseDefinitions() error {
	c.parsed = c.parsed[:0]
	for i, raw := range c.Definitions {
		b, err := json.Marshal(raw)
		if err != nil {
			return fmt.Errorf("audiences.definitions[%d]: %w", i, err)
		}
		d, err := audience.ParseDefinition(b)
		if err != nil {
			return fmt.Errorf("audiences.definitions[%d]: %w", i, err)
		}
		c.parsed = append(c.parsed, d)
	}
	return nil
}

// sinkConfig is one sink as the config file has it: the sink itself
// (engine/sink owns that block) and the consent policy that selects what it
// receives (segments owns that one).
type sinkConfig struct {
	sink.Config `yaml:",inline"`
	// Consent is required for every sink that receives events: nothing is
	// implicit. `consent: {}` states that the sink needs no purpose
	// (suppressed people are still never sent).
	Consent *segments.PolicyConfig `yaml:"consent"`
}

// consentOn reports whether a purpose catalogue is configured.
func (c *Config) consentOn() bool { return len(c.Consent.Purposes) > 0 }

// loadConfig reads path strictly: an unknown field is an error naming it
// and its line, so a typo never silently falls back to a default.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	return parseConfig(data)
}

func parseConfig(data []byte) (*Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &cfg, nil
}

func (c *Config) defaults() {
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Source.Kafka != nil {
		c.Source.Kafka.Defaults()
	}
	c.State.Defaults()
	c.Decode.Defaults()
	c.Batch.Defaults()
	c.Runner.Defaults()
	if c.consentOn() {
		c.Consent.Defaults()
		// The decoder cuts the consent fields out of each event, so the
		// consent stage does not parse every event a second time.
		c.Decode.ConsentPaths = c.Consent.Paths()
		c.Decode.ConsentRecords = true
	}
	for i := range c.Sinks {
		if c.Source.Kafka != nil {
			if k := c.Sinks[i].Kafka; k != nil {
				k.Client.Inherit(c.Source.Kafka.Client)
			}
		}
		c.Sinks[i].Defaults()
	}
	if c.Source.Kafka != nil && c.DeadLetter.Kafka != nil {
		c.DeadLetter.Kafka.Client.Inherit(c.Source.Kafka.Client)
	}
	c.DeadLetter.Defaults()
	if k := c.Audit.Kafka; k != nil {
		if c.Source.Kafka != nil {
			k.Client.Inherit(c.Source.Kafka.Client)
		}
		k.Defaults()
	}
	c.Identity.Defaults()
	c.Encryption.Defaults()
	c.Audiences.Defaults()
	if c.Privacy.IdentityTypes == nil {
		c.Privacy.IdentityTypes = opendsrIdentityTypes()
	}
	c.Privacy.Defaults()
	c.HTTP.Defaults()
}

func (c *Config) validateSinkConsent(i int) error {
	sc := &c.Sinks[i]
	takesEvents := sc.Events == nil || *sc.Events
	switch {
	case sc.Consent == nil && takesEvents:
		return fmt.Errorf("sinks[%d].consent: required for a sink that receives events: list the purposes it needs, or write `consent: {}` to send it every event of people who are not suppressed", i)
	case sc.Consent == nil:
		return nil
	case !takesEvents:
		return fmt.Errorf("sinks[%d].consent: this sink receives no events (events: false)", i)
	case len(sc.Consent.Purposes) > 0 && !c.consentOn():
		return fmt.Errorf("sinks[%d].consent.purposes: no purpose catalogue is configured (consent.purposes)", i)
	}
	sc.Consent.Name = sc.Name
	if err := sc.Consent.Validate(); err != nil {
		return fmt.Errorf("sinks[%d].consent.%w", i, err)
	}
	if c.consentOn() {
		known := map[string]bool{}
		for _, p := range c.Consent.Purposes {
			known[p.Name] = true
		}
		for j, p := range sc.Consent.Purposes {
			if !known[p] {
				return fmt.Errorf("sinks[%d].consent.purposes[%d]: %q is not in the purpose catalogue (consent.purposes)", i, j, p)
			}
		}
	}
	return nil
}

func (c *Config) validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	switch {
	case c.Source.Kafka == nil && c.Source.File == nil:
		return errors.New("source: set exactly one of source.kafka or source.file")
	case c.Source.Kafka != nil && c.Source.File != nil:
		return errors.New("source: set only one of source.kafka and source.file")
	case c.Source.Kafka != nil:
		if err := c.Source.Kafka.Validate(); err != nil {
			return fmt.Errorf("source.kafka.%w", err)
		}
	default:
		if err := c.Source.File.Validate(); err != nil {
			return fmt.Errorf("source.file.%w", err)
		}
	}
	if err := c.State.Validate(); err != nil {
		return fmt.Errorf("state.%w", err)
	}
	if err := c.Decode.Validate(); err != nil {
		return err // already names decode.<field>
	}
	if err := c.Batch.Validate(); err != nil {
		return err
	}
	if err := c.Runner.Validate(); err != nil {
		return fmt.Errorf("runner.%w", err)
	}
	if len(c.Sinks) == 0 {
		return errors.New("sinks: at least one sink is required")
	}
	names := map[string]int{}
	if c.consentOn() {
		if err := c.Consent.Validate(); err != nil {
			return fmt.Errorf("consent.%w", err)
		}
	}
	for i := range c.Sinks {
		if err := c.Sinks[i].Validate(); err != nil {
			return fmt.Errorf("sinks[%d].%w", i, err)
		}
		if err := c.validateSinkConsent(i); err != nil {
			return err
		}
		if j, dup := names[c.Sinks[i].Name]; dup {
			return fmt.Errorf("sinks[%d].name: %q is already the name of sinks[%d]", i, c.Sinks[i].Name, j)
		}
		names[c.Sinks[i].Name] = i
	}
	if err := c.DeadLetter.Validate(); err != nil {
		return fmt.Errorf("dead_letter.%w", err)
	}
	if err := c.Identity.Validate(); err != nil {
		return err // names identity.<field>
	}
	if err := c.Encryption.Validate(); err != nil {
		return fmt.Errorf("encryption.%w", err)
	}
	if err := c.Audiences.Validate(); err != nil {
		return fmt.Errorf("audiences.%w", err)
	}
	if err := c.Audiences.parseDefinitions(); err != nil {
		return err
	}
	if err := c.Privacy.Validate(); err != nil {
		return fmt.Errorf("privacy.%w", err)
	}
	if k := c.Audit.Kafka; k != nil {
		if err := k.Validate(); err != nil {
			return fmt.Errorf("audit.kafka.%w", err)
		}
	}
	for i, t := range c.Privacy.IdentityTypes {
		if _, ok := opendsrTypes[t]; !ok {
			return fmt.Errorf("privacy.identity_types[%d]: %q cannot be resolved (known: %v)", i, t, opendsrIdentityTypes())
		}
	}
	if err := c.HTTP.Validate(); err != nil {
		return fmt.Errorf("http.%w", err)
	}
	return nil
}
