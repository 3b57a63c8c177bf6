package sink

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"slices"
	"testing"
)

// TestDeletionIdentifiers: a deletion notice carries, for each sink, the
// identifiers as its events carry them: all in plain without
// minimisation; hashed where the sink hashes them and keeps them plain
// nowhere, context.externalIds included (the same hex its events hold);
// none where it removes them, or keeps only other fields.
func TestDeletionIdentifiers(t *testing.T) {
	paths := IdentifierPaths{
		"user_id":      {"userId", "previousId"},
		"anonymous_id": {"anonymousId"},
		"email":        {"traits.email", "context.traits.email"},
	}
	ids := []Identifier{{Type: "user_id", Value: "cust-1"}, {Type: "anonymous_id", Value: "anon-9"},
		{Type: "email", Value: "jane@example.com"}, {Type: "loyalty", Value: "L-77"}}
	sum := sha256.Sum256([]byte("jane@example.com"))
	hashed := hex.EncodeToString(sum[:])
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		min  *MinimizeConfig
		want []Identifier
	}{
		{"no minimisation", nil, ids},
		{"email hashed at one path, removed at the other and from external ids", &MinimizeConfig{Hash: []string{"traits.email"},
			Deny: []string{"context.traits.email", "context.externalIds"}},
			[]Identifier{ids[0], ids[1], {Type: "email", Value: hashed, Format: "sha256"}}},
		{"email hashed and removed at its paths, external ids kept", &MinimizeConfig{Hash: []string{"traits.email"}, Deny: []string{"context.traits.email"}},
			ids}, // an event may carry the email plain in context.externalIds
		{"email hashed at one path, plain at the other", &MinimizeConfig{Hash: []string{"traits.email"}}, ids},
		{"email and external ids removed", &MinimizeConfig{Deny: []string{"traits.email", "context.traits.email", "context.externalIds"}},
			[]Identifier{ids[0], ids[1]}},
		{"allow-list of the user id only", &MinimizeConfig{Allow: []string{"type", "messageId", "userId"}}, []Identifier{ids[0]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Name: "s", Records: []string{RecordDeletion}, Minimize: tc.min,
				File: &FileConfig{Path: filepath.Join(dir, tc.name+".ndjson")}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := DeletionIdentifiers(s, ids, paths); !slices.Equal(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}
