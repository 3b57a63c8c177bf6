package privacy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseRequest: no panic; an accepted request satisfies every rule and
// its canonical encoding parses back to the same request.
func FuzzParseRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(opendsrDir, "examples", "request_*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"regulation":"ccpa","subject_request_id":"aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa","subject_request_type":"rectification","submitted_time":"2024-01-01T00:00:00Z","subject_identities":[{"identity_type":"email","identity_value":"x","identity_format":"raw"}],"extensions":{"cdpstream":{"rectification":{"traits":{"a":null}}}}}`))
	f.Add([]byte(`{"subject_identities":[null]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRequest(body, DefaultIdentityTypes)
		if err != nil {
			if _, ok := err.(*FieldError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if !validUUID(r.ID) || len(r.Identities) == 0 || len(r.Identities) > maxIdentities {
			t.Fatalf("accepted an invalid request: %+v", r)
		}
		var m map[string]any
		b, _ := json.Marshal(r)
		_ = json.Unmarshal(b, &m)
		if rf, ok := m["rectification"]; ok {
			delete(m, "rectification")
			m["extensions"] = map[string]any{ExtensionDomain: map[string]any{"rectification": rf}}
		}
		b, err = json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRequest(b, DefaultIdentityTypes)
		if err != nil {
			t.Fatalf("round trip refused: %v\n%s", err, b)
		}
		if r2.digest() != r.digest() {
			t.Fatalf("round trip changed the request:\n%s", b)
		}
	})
}
