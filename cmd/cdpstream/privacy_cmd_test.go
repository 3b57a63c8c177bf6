package main

import (
	"bytes"
	"encoding/json"
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
