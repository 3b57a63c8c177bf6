package privacy

import (
	"encoding/json"
	"testing"
)

// TestRectificationNumbers: a rectified trait that is a large integer
// keeps every digit through parsing and through the sealed part a stored
// request is reopened from (a float64 would round it).
func TestRectificationNumbers(t *testing.T) {
	body := []byte(`{"regulation":"gdpr","subject_request_id":"9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d","subject_request_type":"rectification",
		"submitted_time":"2024-01-01T00:00:00Z","subject_identities":[{"identity_type":"email","identity_value":"a@example.com","identity_format":"raw"}],
		"extensions":{"cdpstream":{"rectification":{"traits":{"account":12345678901234567890,"score":1.5,"plan":"pro","tags":[9007199254740993]}}}}}`)
	r, err := ParseRequest(body, DefaultIdentityTypes)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string, traits map[string]any) {
		t.Helper()
		if n, ok := traits["account"].(json.Number); !ok || n.String() != "12345678901234567890" {
			t.Errorf("%s: account = %#v, want the number 12345678901234567890", when, traits["account"])
		}
		if tags, ok := traits["tags"].([]any); !ok || len(tags) != 1 || tags[0] != json.Number("9007199254740993") {
			t.Errorf("%s: tags = %#v", when, traits["tags"])
		}
		if traits["plan"] != "pro" || traits["score"] != json.Number("1.5") {
			t.Errorf("%s: plan %#v, score %#v", when, traits["plan"], traits["score"])
		}
	}
	check("parsed", r.Rectification.Traits)
	b, err := json.Marshal(sealedPart{Identities: r.Identities, Rectification: r.Rectification})
	if err != nil {
		t.Fatal(err)
	}
	var p sealedPart
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	check("reopened", p.Rectification.Traits)
	if _, err := ParseRequest([]byte(`{"regulation":"gdpr","subject_request_id":"9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d","subject_request_type":"rectification",
		"submitted_time":"2024-01-01T00:00:00Z","subject_identities":[{"identity_type":"email","identity_value":"a@example.com","identity_format":"raw"}],
		"extensions":{"cdpstream":{"rectification":{"traits":[1]}}}}`), DefaultIdentityTypes); err == nil {
		t.Error("traits as an array: accepted")
	}
}
