package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/privacy"
)

func TestIdentityRef(t *testing.T) {
	sum := sha256.Sum256([]byte("jane@example.com"))
	for _, c := range []struct {
		id   privacy.Identity
		want identity.Ref
		err  string
	}{
		{privacy.Identity{Type: "email", Value: " Jane@Example.com", Format: "raw"}, identity.Ref{Type: "email", Value: " Jane@Example.com"}, ""},
		{privacy.Identity{Type: "email", Value: hex.EncodeToString(sum[:]), Format: "sha256"}, identity.Ref{Type: "email", SHA256: sum, Hashed: true}, ""},
		{privacy.Identity{Type: "ios_vendor_id", Value: hex.EncodeToString(sum[:]), Format: "sha256"}, identity.Ref{Type: "device_id", SHA256: sum, Hashed: true}, ""},
		{privacy.Identity{Type: "email", Value: hex.EncodeToString(sum[:31]), Format: "sha256"}, identity.Ref{}, "not 64 hex digits"},
		{privacy.Identity{Type: "email", Value: strings.Repeat("z", 64), Format: "sha256"}, identity.Ref{}, "not 64 hex digits"},
		{privacy.Identity{Type: "email", Value: "x", Format: "md5"}, identity.Ref{}, "not supported"},
		{privacy.Identity{Type: "fax", Value: "x", Format: "raw"}, identity.Ref{}, "no identifier type"},
	} {
		got, err := identityRef(c.id)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%+v: err %v, want %q", c.id, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%+v: %+v, %v; want %+v", c.id, got, err, c.want)
		}
	}
}
