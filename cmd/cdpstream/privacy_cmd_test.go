package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestRectificationFlags: the -fix, -trait and -unset-trait flags build
// the rectification body the API takes, and each malformed flag is
// refused naming itself.
func TestRectificationFlags(t *testing.T) {
	for _, tc := range []struct {
		name                string
		fixes, traits, drop []string
		want, err           string
	}{
		{name: "none", want: "null"},
		{name: "identifier", fixes: []string{"email:a@exmaple.com=a@example.com"},
			want: `{"identifiers":[{"new":"a@example.com","old":"a@exmaple.com","type":"email"}]}`},
		{name: "traits as JSON or string", traits: []string{"plan=pro", "visits=3", "vip=true", "tags=[\"a\"]", "note=null", "empty="},
			want: `{"traits":{"empty":"","note":"null","plan":"pro","tags":["a"],"vip":true,"visits":3}}`},
		{name: "unset", drop: []string{"name"}, want: `{"traits":{"name":null}}`},
		{name: "value with equals", traits: []string{"expr=a=b"}, want: `{"traits":{"expr":"a=b"}}`},
		{name: "big number keeps its digits", traits: []string{"account=12345678901234567890", "pair=3 4"},
			want: `{"traits":{"account":12345678901234567890,"pair":"3 4"}}`},
		{name: "unset twice", drop: []string{"name", "name"}, want: `{"traits":{"name":null}}`},
		{name: "fix with two equals", fixes: []string{"custom:a=b=c"}, err: "more than one '='"},
		{name: "fix without type", fixes: []string{"a@x.com=b@x.com"}, err: `-fix "a@x.com=b@x.com"`},
		{name: "fix without new", fixes: []string{"email:a@x.com="}, err: `-fix "email:a@x.com="`},
		{name: "trait without =", traits: []string{"plan"}, err: `-trait "plan"`},
		{name: "trait twice", traits: []string{"plan=a", "plan=b"}, err: "plan is given twice"},
		{name: "set and unset", traits: []string{"plan=a"}, drop: []string{"plan"}, err: "-unset-trait plan"},
		{name: "unset nothing", drop: []string{""}, err: "-unset-trait needs a KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rectificationFlags(tc.fixes, tc.traits, tc.drop)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one naming %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(got)
			if string(b) != tc.want {
				t.Fatalf("body %s, want %s", b, tc.want)
			}
		})
	}
}

// TestPrivacySubmitUsage: rectification flags on another type, or a
// rectification without them, is a usage error before any request.
func TestPrivacySubmitUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-type", "erasure", "-identity", "email:a@example.com", "-trait", "plan=pro"}, "belong to -type rectification"},
		{[]string{"-type", "rectification", "-identity", "email:a@example.com"}, "needs at least one -fix"},
		{[]string{"-type", "rectification", "-identity", "email:a@example.com", "-fix", "email"}, `-fix "email"`},
	} {
		var out, errb bytes.Buffer
		// The address is closed: a request that got out would fail
		// differently (connection refused), not with a usage error.
		args := append([]string{"privacy", "submit", "-addr", "http://127.0.0.1:1", "-token", "t"}, tc.args...)
		if code := cli(args, nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 naming %q", tc.args, code, errb.String(), tc.want)
		}
	}
}

// TestPrivacySubmitBody: the request the command sends over a real socket
// (a stand-in for the API that records it): -sha256 marks every identity
// hashed, and a rectification's flags become the cdpstream extension.
func TestPrivacySubmitBody(t *testing.T) {
	var got map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/opendsr/requests" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		if err := json.Unmarshal(b, &got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"subject_request_id":"x"}`)
	}))
	defer srv.Close()
	const sum = "a3c6f1e0d9b8a7c6f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a09f8e"
	var out, errb bytes.Buffer
	if code := cli([]string{"privacy", "submit", "-addr", srv.URL, "-token", "tok", "-type", "rectification", "-sha256",
		"-identity", "email:" + sum, "-id", "9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d",
		"-fix", "email:a@exmaple.com=a@example.com", "-trait", "plan=pro", "-unset-trait", "name"}, nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	ids, _ := json.Marshal(got["subject_identities"])
	ext, _ := json.Marshal(got["extensions"])
	if want := `[{"identity_format":"sha256","identity_type":"email","identity_value":"` + sum + `"}]`; string(ids) != want {
		t.Errorf("subject_identities %s, want %s", ids, want)
	}
	if want := `{"cdpstream":{"rectification":{"identifiers":[{"new":"a@example.com","old":"a@exmaple.com","type":"email"}],"traits":{"name":null,"plan":"pro"}}}}`; string(ext) != want {
		t.Errorf("extensions %s, want %s", ext, want)
	}
	if got["subject_request_type"] != "rectification" || got["subject_request_id"] != "9b2a7c1e-3d4f-4a5b-8c6d-7e8f9a0b1c2d" || got["api_version"] != "2.0" {
		t.Errorf("body %v", got)
	}
}
