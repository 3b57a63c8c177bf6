package sink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaClientConfig is how a franz-go client reaches the brokers: seed
// brokers, client id, TLS and SASL. It is shared by every Kafka component
// (the Kafka sink and dead-letter sink here, the Kafka source in package
// ingest), so that one YAML block means the same thing everywhere.
//
// It holds connection settings only; producer and consumer options belong
// to the component that uses the client.
type KafkaClientConfig struct {
	// Brokers are the seed brokers as host:port; a missing port means 9092.
	// A sink whose brokers are empty inherits the source's connection (see
	// Inherit). Opts fails when it is still empty.
	Brokers []string `yaml:"brokers"`
	// ClientID is sent to the brokers with every request (it shows up in
	// broker logs and quotas). Default "cdpstream".
	ClientID string `yaml:"client_id"`
	// TLS encrypts the connection. Default off.
	TLS TLSConfig `yaml:"tls"`
	// SASL authenticates the client. Default none.
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig configures TLS to the brokers. The broker's host name is
// verified against its certificate (franz-go sets ServerName per broker).
type TLSConfig struct {
	// Enabled turns TLS on. With no other field set the system roots verify
	// the brokers.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the broker certificates,
	// used instead of the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate and its key (PEM) for
	// mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify disables verification of the broker certificate.
	// For tests only: it allows anyone on the path to read the traffic.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig configures SASL authentication. SASL without TLS sends the
// PLAIN password in clear text; SCRAM does not reveal the password but the
// session is still unencrypted.
type SASLConfig struct {
	// Mechanism is "plain", "scram-sha-256" or "scram-sha-512"
	// (case-insensitive); empty disables SASL.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password, or PasswordEnv: the name of an environment variable that
	// holds the password, read when the client is created (keeps secrets out
	// of config files). Exactly one of them with a mechanism.
	Password    string `yaml:"password"`
	PasswordEnv string `yaml:"password_env"`
}

// String formats s without the password, so that logging a config does not
// leak it.
func (s SASLConfig) String() string {
	pw := ""
	if s.Password != "" {
		pw = "<redacted>"
	}
	return fmt.Sprintf("{mechanism:%s username:%s password:%s password_env:%s}", s.Mechanism, s.Username, pw, s.PasswordEnv)
}

// SASL mechanism names accepted in SASLConfig.Mechanism.
const (
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// Defaults fills unset fields with their defaults.
func (c *KafkaClientConfig) Defaults() {
	if c.ClientID == "" {
		c.ClientID = "cdpstream"
	}
}

// Inherit fills the connection of c from src when c names no brokers: a
// sink writing to the cluster it reads from need not repeat the brokers,
// TLS and SASL. Fields that c sets itself are kept. ClientID is not
// inherited.
func (c *KafkaClientConfig) Inherit(src KafkaClientConfig) {
	if len(c.Brokers) != 0 {
		return
	}
	c.Brokers = append([]string(nil), src.Brokers...)
	if c.TLS == (TLSConfig{}) {
		c.TLS = src.TLS
	}
	if c.SASL == (SASLConfig{}) {
		c.SASL = src.SASL
	}
}

// Validate checks c without touching files or the environment. Error
// messages name the yaml field relative to the client block ("tls.key_file:
// ..."); the caller prefixes where the block sits. Empty Brokers is valid
// here (it may be inherited); Opts rejects it.
func (c *KafkaClientConfig) Validate() error {
	for i, b := range c.Brokers {
		if strings.TrimSpace(b) == "" {
			return fmt.Errorf("brokers[%d]: empty broker address", i)
		}
	}
	t := c.TLS
	if !t.Enabled {
		switch {
		case t.CAFile != "":
			return errors.New("tls.ca_file: set but tls.enabled is false")
		case t.CertFile != "":
			return errors.New("tls.cert_file: set but tls.enabled is false")
		case t.KeyFile != "":
			return errors.New("tls.key_file: set but tls.enabled is false")
		case t.InsecureSkipVerify:
			return errors.New("tls.insecure_skip_verify: set but tls.enabled is false")
		}
	}
	if t.CertFile != "" && t.KeyFile == "" {
		return errors.New("tls.key_file: required with tls.cert_file")
	}
	if t.KeyFile != "" && t.CertFile == "" {
		return errors.New("tls.cert_file: required with tls.key_file")
	}
	s := c.SASL
	switch strings.ToLower(s.Mechanism) {
	case "":
		switch {
		case s.Username != "":
			return errors.New("sasl.mechanism: required when sasl.username is set")
		case s.Password != "" || s.PasswordEnv != "":
			return errors.New("sasl.mechanism: required when a sasl password is set")
		}
		return nil
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
	default:
		return fmt.Errorf("sasl.mechanism: unknown mechanism %q (want %s, %s, %s)", s.Mechanism, SASLPlain, SASLScramSHA256, SASLScramSHA512)
	}
	if s.Username == "" {
		return errors.New("sasl.username: required with sasl.mechanism")
	}
	switch {
	case s.Password != "" && s.PasswordEnv != "":
		return errors.New("sasl.password_env: only one of sasl.password and sasl.password_env may be set")
	case s.Password == "" && s.PasswordEnv == "":
		return errors.New("sasl.password: one of sasl.password and sasl.password_env is required with sasl.mechanism")
	}
	return nil
}

// Opts returns the franz-go options for c: seed brokers, client id, TLS
// dialer and SASL mechanism. It validates c, reads the TLS files and the
// password environment variable; errors name the field. The caller appends
// its producer or consumer options.
func (c *KafkaClientConfig) Opts() ([]kgo.Opt, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(c.Brokers) == 0 {
		return nil, errors.New("brokers: at least one broker is required")
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	if c.TLS.Enabled {
		tc, err := c.TLS.config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL.Mechanism != "" {
		pw := c.SASL.Password
		if c.SASL.PasswordEnv != "" {
			var ok bool
			if pw, ok = os.LookupEnv(c.SASL.PasswordEnv); !ok || pw == "" {
				return nil, fmt.Errorf("sasl.password_env: environment variable %q is not set", c.SASL.PasswordEnv)
			}
		}
		switch strings.ToLower(c.SASL.Mechanism) {
		case SASLPlain:
			opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: pw}.AsMechanism()))
		case SASLScramSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: pw}.AsSha256Mechanism()))
		case SASLScramSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: pw}.AsSha512Mechanism()))
		}
	}
	return opts, nil
}

func (t TLSConfig) config() (*tls.Config, error) {
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as test-only
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: cannot read: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: no PEM certificate in %q", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: cannot load key pair: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
