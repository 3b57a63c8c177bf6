package privacy

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Config configures the request processor (YAML block "privacy").
type Config struct {
	// Domain is sent as X-OpenDSR-Processor-Domain and is the subject of
	// the generated certificate. Default "localhost".
	Domain string `yaml:"domain"`
	// PublicURL is the base of results_url and of the certificate URL in
	// discovery, e.g. "https://cdp.example.com". Default: taken from each
	// request (scheme and Host header).
	PublicURL string `yaml:"public_url"`
	// ControllerID is the controller_id answered when auth is off. With
	// auth on it is the id of the token that submitted the request.
	// Default "default".
	ControllerID string `yaml:"controller_id"`
	// IdentityTypes accepted in subject_identities. Default: the 11 types
	// of OpenDSR 2.0 section 5.1 (DefaultIdentityTypes). The Subjects
	// implementation maps them to graph identifier types.
	IdentityTypes []string `yaml:"identity_types"`
	// WaitingPeriod delays erasure and erasure_suppress after submission;
	// the request stays pending and can be cancelled meanwhile. Default 0.
	WaitingPeriod time.Duration `yaml:"waiting_period"`
	// ExpectedDuration is added to the start time (submission plus any
	// waiting period) for expected_completion_time. Default 1h.
	ExpectedDuration time.Duration `yaml:"expected_duration"`
	// ResultsTTL is how long an access or portability export is served;
	// after it the results_url answers 410. Default 7 days.
	ResultsTTL time.Duration `yaml:"results_ttl"`
	// PollInterval is how often the processor looks for due requests when
	// nothing woke it (a waiting period ending, a retry). Default 1s.
	PollInterval time.Duration `yaml:"poll_interval"`
	// RetryBackoff is the first delay before a failed request runs again;
	// it doubles per attempt up to 10 minutes. Failed requests stay
	// in_progress and are retried without limit. Default 10s.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// Callbacks configures status callbacks.
	Callbacks CallbackConfig `yaml:"callbacks"`
	// CertFile and KeyFile (PEM) name a CA-issued certificate and its key
	// (ECDSA or RSA) that sign callbacks and responses. Default: none, and
	// a self-signed ECDSA P-256 certificate for Domain is generated at
	// first start and kept in the store (OpenDSR 4.1 asks for a
	// CA-issued one in production).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Retention erases profiles nobody has seen for a while.
	Retention RetentionConfig `yaml:"retention"`
}

// RetentionConfig configures automatic erasure of inactive profiles. Each
// sweep lists live profiles last seen before now - InactiveAfter and
// erases up to Batch of them through one internal erasure request (origin
// "retention", actor "retention"): the same steps, deletion notices and
// audit entries as a data subject's erasure. The next sweep waits until
// that request finished.
type RetentionConfig struct {
	// InactiveAfter is how long a profile may go unseen; 0 (default) turns
	// retention off. "Seen" is the newest last-seen time of its
	// identifiers, which the identity graph keeps to identity.seen_granularity.
	InactiveAfter time.Duration `yaml:"inactive_after"`
	// Interval between sweeps. Default 1h.
	Interval time.Duration `yaml:"interval"`
	// Batch is the most profiles one retention request erases. Default 1000.
	Batch int `yaml:"batch"`
}

// CallbackConfig bounds status-callback delivery.
type CallbackConfig struct {
	// Timeout of one POST. Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Attempts per callback before it is given up (counted and audited).
	// Default 6.
	Attempts int `yaml:"attempts"`
	// Backoff is the delay after the first failure, doubling up to
	// MaxBackoff. Defaults 1s and 1m.
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Defaults fills zero fields.
func (c *Config) Defaults() {
	if c.Domain == "" {
		c.Domain = "localhost"
	}
	if c.ControllerID == "" {
		c.ControllerID = "default"
	}
	if len(c.IdentityTypes) == 0 {
		c.IdentityTypes = append([]string(nil), DefaultIdentityTypes...)
	}
	if c.ExpectedDuration == 0 {
		c.ExpectedDuration = time.Hour
	}
	if c.ResultsTTL == 0 {
		c.ResultsTTL = 7 * 24 * time.Hour
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 10 * time.Second
	}
	if c.Callbacks.Timeout == 0 {
		c.Callbacks.Timeout = 10 * time.Second
	}
	if c.Callbacks.Attempts == 0 {
		c.Callbacks.Attempts = 6
	}
	if c.Callbacks.Backoff == 0 {
		c.Callbacks.Backoff = time.Second
	}
	if c.Retention.Interval == 0 {
		c.Retention.Interval = time.Hour
	}
	if c.Retention.Batch == 0 {
		c.Retention.Batch = 1000
	}
	if c.Callbacks.MaxBackoff == 0 {
		c.Callbacks.MaxBackoff = time.Minute
	}
}

// Validate reports the first invalid field, named relative to the block.
func (c Config) Validate() error {
	if c.PublicURL != "" {
		u, err := url.Parse(c.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("public_url: %q is not an absolute http(s) url", c.PublicURL)
		}
	}
	for i, t := range c.IdentityTypes {
		if t == "" {
			return fmt.Errorf("identity_types[%d]: must not be empty", i)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"waiting_period", c.WaitingPeriod}, {"expected_duration", c.ExpectedDuration}, {"results_ttl", c.ResultsTTL},
		{"poll_interval", c.PollInterval}, {"retry_backoff", c.RetryBackoff}, {"callbacks.timeout", c.Callbacks.Timeout},
		{"callbacks.backoff", c.Callbacks.Backoff}, {"callbacks.max_backoff", c.Callbacks.MaxBackoff},
		{"retention.inactive_after", c.Retention.InactiveAfter}, {"retention.interval", c.Retention.Interval}} {
		if d.v < 0 {
			return fmt.Errorf("%s: must be >= 0", d.name)
		}
	}
	if c.Callbacks.Attempts < 1 {
		return errors.New("callbacks.attempts: must be >= 1")
	}
	if c.Retention.Batch < 1 {
		return errors.New("retention.batch: must be >= 1")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("cert_file, key_file: set both or neither")
	}
	return nil
}
