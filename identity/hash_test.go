package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble"
)

// TestLookupHash: an identifier is found by the SHA-256 of its normalised
// value, and only by that.
func TestLookupHash(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	_, ids := tg.process([]testEvent{
		{msg: "m1", ts: testEpoch, topic: "events", off: 1, user: " u-jane ",
			ids: [][2]string{{TypeEmail, "  Jane.Doe@Example.COM "}, {TypeDeviceID, "dev-1"}}},
	})
	jane := ids[0]
	for _, c := range []struct {
		typ, hashed string
		want        uint32
	}{
		{TypeEmail, "jane.doe@example.com", jane},
		{TypeEmail, "Jane.Doe@Example.COM", 0}, // not the normalised form
		{TypeEmail, "  jane.doe@example.com ", 0},
		{TypeUserID, "u-jane", jane},
		{TypeUserID, " u-jane ", 0},
		{TypeDeviceID, "dev-1", jane},
		{TypeAnonymousID, "dev-1", 0}, // the type is part of the key
		{"no_such_type", "dev-1", 0},
	} {
		v, err := tg.g.LookupHash(c.typ, sha256.Sum256([]byte(c.hashed)))
		switch {
		case c.want == 0 && !errors.Is(err, ErrNotFound):
			t.Errorf("LookupHash(%s, sha256(%q)) = %d, %v; want ErrNotFound", c.typ, c.hashed, v.ProfileID, err)
		case c.want != 0 && (err != nil || v.ProfileID != c.want):
			t.Errorf("LookupHash(%s, sha256(%q)) = %d, %v; want %d", c.typ, c.hashed, v.ProfileID, err, c.want)
		}
	}
	// The raw and the hashed form reach the same key.
	raw, err := tg.g.Lookup(TypeEmail, "JANE.DOE@example.com")
	if err != nil || raw.ProfileID != jane {
		t.Fatalf("Lookup = %d, %v", raw.ProfileID, err)
	}
}

// opendsrSHA256Input is what privacy hashes for an OpenDSR identity given
// raw (privacy/request.go normalizedSHA256), and what cdpstream asks a
// controller to hash for identity_format sha256: trimmed, and lowercased
// for email.
func opendsrSHA256Input(opendsrType, v string) string {
	v = strings.TrimSpace(v)
	if opendsrType == "email" {
		v = strings.ToLower(v)
	}
	return v
}

// TestHashedIdentityNormalisation compares, for the identifier types the
// OpenDSR identity types map to (cmd/cdpstream/adapters.go), what a
// controller hashes with what the graph's default normalisers keep. They
// agree for user_id (controller_customer_id), email and device_id (the
// *_id and *_publisher_id types); advertising_id is lowercased by the
// graph, so its SHA-256 must be taken over the lowercase value (an IDFA is
// usually written in upper case: its hash as written finds nothing).
func TestHashedIdentityNormalisation(t *testing.T) {
	cfg := testConfig()
	cfg.Defaults()
	norm := map[string]normFunc{}
	for _, tc := range cfg.Types {
		norm[tc.Name] = normalisers[tc.Normalize]
	}
	inputs := []string{
		"jane@example.com", "  Jane.Doe@Example.COM\t", "\u00a0jane@example.com\u2003", "ÉLODIE@exemple.fr",
		"u-41", " U-41 ", "\tuser 42\n", "6D92078A-8246-4BA4-AE5B-76104861E7DC", "6d92078a-8246-4ba4-ae5b-76104861e7dc",
		"38400000-8cf0-11bd-b23e-10b96e40000d", "  dev-phone-5b2  ", "Straße", "\u00a0\u00a0",
	}
	for _, m := range []struct{ opendsr, typ string }{
		{"controller_customer_id", TypeUserID}, {"email", TypeEmail},
		{"ios_advertising_id", TypeAdvertisingID}, {"android_id", TypeDeviceID},
	} {
		for _, in := range inputs {
			got, ok := norm[m.typ](nil, in)
			if !ok {
				continue // not an identifier of the type: no key to find
			}
			ctrl := opendsrSHA256Input(m.opendsr, in)
			same := string(got) == ctrl
			want := true
			if m.typ == TypeAdvertisingID {
				want = ctrl == strings.ToLower(ctrl)
			}
			if same != want {
				t.Errorf("%s %q: graph keeps %q, controller hashes %q (same %v, want %v)", m.typ, in, got, ctrl, same, want)
			}
		}
	}
	// phone has no OpenDSR identity type; its normaliser keeps digits and
	// a leading '+', which is what a hash of a phone must be taken over.
	if got, _ := normPhone(nil, " +1 (555) 010-0000 "); string(got) != "+15550100000" {
		t.Errorf("phone normalised to %q", got)
	}
}

// TestOldDerivationRefused: a store written with the v1 key derivation is
// refused with ErrOldDerivation, not opened to find nothing.
func TestOldDerivationRefused(t *testing.T) {
	tg := newTestGraph(t, testConfig())
	tg.close()
	db := tg.reopenDB()
	defer db.Close()
	m := hmac.New(sha256.New, []byte(tg.cfg.Secret))
	m.Write(append([]byte{0}, secretCheckV1...))
	if err := db.Set([]byte{prefixMeta, metaSecret}, m.Sum(nil)[:hashLen], pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_, err := New(tg.cfg, db, nil)
	if !errors.Is(err, ErrOldDerivation) {
		t.Fatalf("got %v, want ErrOldDerivation", err)
	}
	// Under another secret it is a secret mismatch, as before.
	if _, err := New(Config{Secret: "another"}, db, nil); !errors.Is(err, ErrSecretMismatch) {
		t.Fatalf("got %v, want ErrSecretMismatch", err)
	}
}
