package privacy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/cockroachdb/pebble"
)

// prefixSigner: 0x35 → 1 | uvarint len | PKCS#8 key DER | certificate DER.
const prefixSigner byte = 0x35

// signer signs response and callback bodies: base64 of an ECDSA (ASN.1)
// or RSA PKCS#1 v1.5 signature over SHA-256 of the raw bytes, verifiable
// with the public key of certPEM.
type signer struct {
	key     crypto.Signer
	cert    *x509.Certificate
	certPEM []byte
}

func (s *signer) sign(body []byte) string {
	h := sha256.Sum256(body)
	sig, err := s.key.Sign(rand.Reader, h[:], crypto.SHA256)
	if err != nil {
		return "" // only on a broken key; the receiver refuses the body
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// VerifySignature checks an X-OpenDSR-Signature header value against body
// with the certificate's public key (ECDSA or RSA), as a controller does
// with the certificate from discovery.
func VerifySignature(cert *x509.Certificate, body []byte, sig string) error {
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("privacy: signature is not base64: %w", err)
	}
	h := sha256.Sum256(body)
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, h[:], raw) {
			return errors.New("privacy: bad signature")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], raw)
	}
	return errors.New("privacy: unsupported certificate key type")
}

// loadSigner reads the configured key pair, else the one in the store,
// else generates a self-signed ECDSA P-256 certificate for domain and
// stores it.
func loadSigner(db *pebble.DB, cfg Config, now time.Time) (*signer, error) {
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("privacy.cert_file: cannot load the key pair: %w", err)
		}
		key, ok := pair.PrivateKey.(crypto.Signer)
		if !ok {
			return nil, errors.New("privacy.key_file: key cannot sign")
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("privacy.cert_file: %w", err)
		}
		return newSigner(key, pair.Certificate[0], cert), nil
	}
	v, closer, err := db.Get([]byte{prefixSigner})
	if err == nil {
		defer closer.Close()
		if len(v) < 2 || v[0] != 1 {
			return nil, errors.New("privacy: corrupt signing key in the store")
		}
		n, k := binary.Uvarint(v[1:])
		if k <= 0 || uint64(len(v)-1-k) < n {
			return nil, errors.New("privacy: corrupt signing key in the store")
		}
		keyDER := v[1+k : 1+k+int(n)]
		certDER := append([]byte(nil), v[1+k+int(n):]...)
		pk, err := x509.ParsePKCS8PrivateKey(keyDER)
		if err != nil {
			return nil, fmt.Errorf("privacy: cannot parse the stored signing key: %w", err)
		}
		cert, err := x509.ParseCertificate(certDER)
		if err != nil {
			return nil, fmt.Errorf("privacy: cannot parse the stored certificate: %w", err)
		}
		return newSigner(pk.(crypto.Signer), certDER, cert), nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return nil, fmt.Errorf("privacy: cannot read the signing key: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("privacy: cannot generate a signing key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cfg.Domain, Organization: []string{"cdpstream OpenDSR processor"}},
		DNSNames:     []string{cfg.Domain},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("privacy: cannot create the certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	val := binary.AppendUvarint([]byte{1}, uint64(len(keyDER)))
	val = append(append(val, keyDER...), certDER...)
	if err := db.Set([]byte{prefixSigner}, val, pebble.Sync); err != nil {
		return nil, fmt.Errorf("privacy: cannot store the signing key: %w", err)
	}
	cert, _ := x509.ParseCertificate(certDER)
	return newSigner(key, certDER, cert), nil
}

func newSigner(key crypto.Signer, certDER []byte, cert *x509.Certificate) *signer {
	return &signer{key: key, cert: cert, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})}
}
