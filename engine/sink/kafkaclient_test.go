package sink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/twmb/franz-go/pkg/kfake"
)

// writeAndConsume writes rows 0..4 through a Kafka sink on client and
// reads them back. franz-go retries connection and authentication failures
// until ctx ends, so a negative case costs its timeout.
func writeAndConsume(t *testing.T, client KafkaClientConfig, topic string, timeout time.Duration) error {
	t.Helper()
	s, err := NewKafka("k", KafkaConfig{Topic: topic, Client: client})
	if err != nil {
		return err
	}
	defer s.Close()
	pctx, pcancel := context.WithTimeout(context.Background(), timeout)
	defer pcancel()
	pingErr := s.Ping(pctx)
	t.Logf("Ping: %v", pingErr)
	rows := testRows(5)
	b := makeBatch(t, memory.NewGoAllocator(), rows...)
	defer b.Release()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.Write(ctx, b, nil); err != nil {
		t.Logf("Write: %v", err)
		if pingErr == nil {
			t.Errorf("Write failed (%v) but Ping succeeded", err)
		}
		return err
	}
	if pingErr != nil {
		t.Errorf("Write succeeded but Ping failed: %v", pingErr)
	}
	checkRecords(t, consume(t, client, topic, len(rows)), rows, KeyProfileID)
	return nil
}

func TestKafkaClientSASL(t *testing.T) {
	cluster := newCluster(t, []string{"plain", "scram-sha-256", "scram-sha-512", "env", "bad"},
		kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "alice", "alice-pw"),
		kfake.Superuser("SCRAM-SHA-256", "bob", "bob-pw"),
		kfake.Superuser("SCRAM-SHA-512", "carol", "carol-pw"),
	)
	addrs := cluster.ListenAddrs()
	for topic, sasl := range map[string]SASLConfig{
		"plain":         {Mechanism: "plain", Username: "alice", Password: "alice-pw"},
		"scram-sha-256": {Mechanism: "SCRAM-SHA-256", Username: "bob", Password: "bob-pw"},
		"scram-sha-512": {Mechanism: "scram-sha-512", Username: "carol", Password: "carol-pw"},
		"env":           {Mechanism: "scram-sha-512", Username: "carol", PasswordEnv: "CDP_TEST_KAFKA_PW"},
	} {
		t.Run(topic, func(t *testing.T) {
			t.Setenv("CDP_TEST_KAFKA_PW", "carol-pw")
			if err := writeAndConsume(t, KafkaClientConfig{Brokers: addrs, SASL: sasl}, topic, 10*time.Second); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		c := KafkaClientConfig{Brokers: addrs, SASL: SASLConfig{Mechanism: "scram-sha-256", Username: "bob", Password: "nope"}}
		if err := writeAndConsume(t, c, "bad", time.Second); err == nil {
			t.Fatal("Write with a wrong password succeeded")
		}
	})
	t.Run("no sasl", func(t *testing.T) {
		if err := writeAndConsume(t, KafkaClientConfig{Brokers: addrs}, "bad", time.Second); err == nil {
			t.Fatal("Write without SASL succeeded")
		}
	})
	t.Run("env unset", func(t *testing.T) {
		c := KafkaClientConfig{Brokers: addrs, SASL: SASLConfig{Mechanism: "plain", Username: "alice", PasswordEnv: "CDP_TEST_KAFKA_UNSET"}}
		_, err := c.Opts()
		if err == nil || !strings.HasPrefix(err.Error(), "sasl.password_env:") {
			t.Fatalf("Opts = %v", err)
		}
	})
}

func TestKafkaClientMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	serverCert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	cluster := newCluster(t, []string{"tls"}, kfake.TLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	}))
	addrs := cluster.ListenAddrs()
	good := KafkaClientConfig{Brokers: addrs, TLS: TLSConfig{Enabled: true, CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
	if err := writeAndConsume(t, good, "tls", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Without the client certificate the broker refuses the handshake;
	// without the CA the client refuses the broker.
	noCert := KafkaClientConfig{Brokers: addrs, TLS: TLSConfig{Enabled: true, CAFile: pki.caFile}}
	if err := writeAndConsume(t, noCert, "tls", time.Second); err == nil {
		t.Error("Write without a client certificate succeeded")
	}
	noCA := KafkaClientConfig{Brokers: addrs, TLS: TLSConfig{Enabled: true, CertFile: pki.clientCert, KeyFile: pki.clientKey}}
	if err := writeAndConsume(t, noCA, "tls", time.Second); err == nil {
		t.Error("Write trusting the system roots succeeded")
	}

	for field, c := range map[string]TLSConfig{
		"tls.ca_file:":   {Enabled: true, CAFile: filepath.Join(dir, "missing.pem")},
		"tls.ca_file: ":  {Enabled: true, CAFile: pki.clientKey}, // PEM, but no certificate
		"tls.cert_file:": {Enabled: true, CertFile: pki.clientCert, KeyFile: pki.serverKey},
	} {
		cc := KafkaClientConfig{Brokers: addrs, TLS: c}
		if _, err := cc.Opts(); err == nil || !strings.HasPrefix(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("Opts(%+v) = %v, want error on %s", c, err, field)
		}
	}
}

type pki struct {
	pool                                                 *x509.CertPool
	caFile, serverCert, serverKey, clientCert, clientKey string
}

// newPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files into dir.
func newPKI(t *testing.T, dir string) pki {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cdpstream test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := pki{pool: x509.NewCertPool(), caFile: writePEM("ca.pem", "CERTIFICATE", caDER)}
	p.pool.AddCert(ca)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(name+".pem", "CERTIFICATE", der), writePEM(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func TestKafkaClientValidate(t *testing.T) {
	for _, c := range []struct {
		cfg   KafkaClientConfig
		field string // error prefix; "" = valid
	}{
		{KafkaClientConfig{}, ""},
		{KafkaClientConfig{Brokers: []string{"a:9092", " "}}, "brokers[1]:"},
		{KafkaClientConfig{TLS: TLSConfig{CAFile: "ca.pem"}}, "tls.ca_file:"},
		{KafkaClientConfig{TLS: TLSConfig{CertFile: "c.pem", KeyFile: "k.pem"}}, "tls.cert_file:"},
		{KafkaClientConfig{TLS: TLSConfig{InsecureSkipVerify: true}}, "tls.insecure_skip_verify:"},
		{KafkaClientConfig{TLS: TLSConfig{Enabled: true, CertFile: "c.pem"}}, "tls.key_file:"},
		{KafkaClientConfig{TLS: TLSConfig{Enabled: true, KeyFile: "k.pem"}}, "tls.cert_file:"},
		{KafkaClientConfig{TLS: TLSConfig{Enabled: true, CertFile: "c.pem", KeyFile: "k.pem"}}, ""},
		{KafkaClientConfig{SASL: SASLConfig{Mechanism: "gssapi", Username: "u", Password: "p"}}, "sasl.mechanism:"},
		{KafkaClientConfig{SASL: SASLConfig{Username: "u"}}, "sasl.mechanism:"},
		{KafkaClientConfig{SASL: SASLConfig{PasswordEnv: "X"}}, "sasl.mechanism:"},
		{KafkaClientConfig{SASL: SASLConfig{Mechanism: "plain", Password: "p"}}, "sasl.username:"},
		{KafkaClientConfig{SASL: SASLConfig{Mechanism: "plain", Username: "u"}}, "sasl.password:"},
		{KafkaClientConfig{SASL: SASLConfig{Mechanism: "plain", Username: "u", Password: "p", PasswordEnv: "X"}}, "sasl.password_env:"},
		{KafkaClientConfig{SASL: SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "u", PasswordEnv: "X"}}, ""},
	} {
		err := c.cfg.Validate()
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", c.cfg, err)
		case c.field != "" && (err == nil || !strings.HasPrefix(err.Error(), c.field)):
			t.Errorf("%+v: error %v, want one naming %s", c.cfg, err, c.field)
		}
	}
	var empty KafkaClientConfig
	if _, err := empty.Opts(); err == nil || !strings.HasPrefix(err.Error(), "brokers:") {
		t.Errorf("Opts without brokers = %v", err)
	}
}

func TestKafkaClientInheritAndString(t *testing.T) {
	src := KafkaClientConfig{
		Brokers: []string{"k1:9093"}, ClientID: "src",
		TLS:  TLSConfig{Enabled: true},
		SASL: SASLConfig{Mechanism: "plain", Username: "u", Password: "secret-pw"},
	}
	var c KafkaClientConfig
	c.Defaults()
	c.Inherit(src)
	if fmt.Sprint(c.Brokers) != "[k1:9093]" || !c.TLS.Enabled || c.SASL != src.SASL || c.ClientID != "cdpstream" {
		t.Errorf("Inherit: %+v", c)
	}
	c.Brokers[0] = "changed"
	if src.Brokers[0] != "k1:9093" {
		t.Error("Inherit shares the brokers slice")
	}
	own := KafkaClientConfig{Brokers: []string{"other:9092"}}
	own.Inherit(src)
	if own.TLS.Enabled || own.SASL.Mechanism != "" {
		t.Errorf("Inherit overrode a config with its own brokers: %+v", own)
	}
	if s := fmt.Sprintf("%+v %v", src, src); strings.Contains(s, "secret-pw") {
		t.Errorf("formatted config leaks the password: %s", s)
	}
}
