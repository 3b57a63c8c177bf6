package engine

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

type memAuditor struct {
	mu sync.Mutex
	e  []Entry
}

func (m *memAuditor) Audit(_ context.Context, e Entry) {
	m.mu.Lock()
	m.e = append(m.e, e)
	m.mu.Unlock()
}

func (m *memAuditor) entries() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Entry(nil), m.e...)
}

func authServer(t *testing.T, cfg AuthConfig, opts ...AuthOption) (*httptest.Server, *Auth) {
	t.Helper()
	a, err := NewAuth(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/audiences", a.Require(ScopeAudiencesRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, 200, map[string]string{"token": TokenID(r.Context())})
	})))
	mux.Handle("POST /v1/audiences", a.Require(ScopeAudiencesWrite, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if IsBodyTooLarge(err) {
			WriteError(w, http.StatusRequestEntityTooLarge, "too large")
			return
		}
		WriteJSON(w, 201, map[string]int{"bytes": len(b)})
	})))
	mux.Handle("GET /v1/audiences/{id}/contains", a.RequirePersonal(ScopeAudiencesRead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		SetAuditTarget(r.Context(), "pid:"+r.URL.Query().Get("profile_id"))
		WriteJSON(w, 200, map[string]bool{"member": true})
	})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, a
}

func do(t *testing.T, method, url, token, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func testAuthConfig() AuthConfig {
	return AuthConfig{Tokens: []TokenConfig{
		{ID: "reader", Hash: HashToken("r-secret"), Scopes: []string{ScopeAudiencesRead}},
		{ID: "writer", Hash: strings.ToUpper(HashToken("w-secret")), Scopes: []string{ScopeAudiencesWrite}},
		{ID: "root", Hash: HashToken("a-secret"), Scopes: []string{ScopeAdmin}},
	}, MaxBodyBytes: 64}
}

func TestAuthStatus(t *testing.T) {
	srv, _ := authServer(t, testAuthConfig())
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/v1/audiences", "", "", 401},
		{"GET", "/v1/audiences", "nope", "", 401},
		{"GET", "/v1/audiences", "r-secret", "", 200},
		{"GET", "/v1/audiences", "w-secret", "", 403},
		{"GET", "/v1/audiences", "a-secret", "", 200},
		{"POST", "/v1/audiences", "r-secret", "{}", 403},
		{"POST", "/v1/audiences", "w-secret", "{}", 201},
		{"POST", "/v1/audiences", "a-secret", strings.Repeat("x", 65), 413},
	} {
		resp, body := do(t, tc.method, srv.URL+tc.path, tc.token, tc.body)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s token %q: status %d, want %d (%s)", tc.method, tc.path, tc.token, resp.StatusCode, tc.want, body)
		}
		if tc.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: Bearer: %q", resp.Header.Get("WWW-Authenticate"))
		}
		if tc.want == 200 && tc.path == "/v1/audiences" && !strings.Contains(body, `"token"`) {
			t.Errorf("handler did not see the token id: %s", body)
		}
	}
}

func TestAuthBodyLimitChunked(t *testing.T) {
	srv, _ := authServer(t, testAuthConfig())
	// No Content-Length: the limit applies while the handler reads.
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(strings.Repeat("y", 200)))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/v1/audiences", pr)
	req.Header.Set("Authorization", "Bearer w-secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked body over the limit: status %d, want 413", resp.StatusCode)
	}
}

func TestAuthRateLimit(t *testing.T) {
	cfg := testAuthConfig()
	cfg.RateLimit = RateLimitConfig{PerSecond: 0.5, Burst: 2}
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, _ := authServer(t, cfg, WithAuthClock(clock))
	for i, want := range []int{200, 200, 429} {
		resp, _ := do(t, "GET", srv.URL+"/v1/audiences", "r-secret", "")
		if resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "2" {
			t.Fatalf("Retry-After %q, want 2", resp.Header.Get("Retry-After"))
		}
	}
	// Another token has its own bucket.
	if resp, _ := do(t, "GET", srv.URL+"/v1/audiences", "a-secret", ""); resp.StatusCode != 200 {
		t.Fatalf("admin token limited by the reader's bucket: %d", resp.StatusCode)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if resp, _ := do(t, "GET", srv.URL+"/v1/audiences", "r-secret", ""); resp.StatusCode != 200 {
		t.Fatalf("after refill: status %d, want 200", resp.StatusCode)
	}
}

func TestAuthAudit(t *testing.T) {
	aud := &memAuditor{}
	srv, _ := authServer(t, testAuthConfig(), WithAuditor(aud))
	do(t, "GET", srv.URL+"/v1/audiences/vip/contains?profile_id=7", "r-secret", "")
	do(t, "GET", srv.URL+"/v1/audiences/vip/contains?profile_id=8", "", "")
	do(t, "GET", srv.URL+"/v1/audiences", "r-secret", "") // not personal: no entry
	got := aud.entries()
	if len(got) != 2 {
		t.Fatalf("got %d audit entries, want 2: %+v", len(got), got)
	}
	want := []Entry{
		{TokenID: "reader", Action: "GET /v1/audiences/{id}/contains", Target: "pid:7", Outcome: 200},
		{TokenID: "", Action: "GET /v1/audiences/{id}/contains", Target: "", Outcome: 401},
	}
	for i := range want {
		g := got[i]
		g.Time = time.Time{}
		if g != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, g, want[i])
		}
	}
}

func TestAuthDisabled(t *testing.T) {
	srv, a := authServer(t, AuthConfig{})
	if a.Enabled() {
		t.Fatal("Enabled with no tokens")
	}
	if resp, _ := do(t, "POST", srv.URL+"/v1/audiences", "", "{}"); resp.StatusCode != 201 {
		t.Fatalf("auth disabled: status %d, want 201", resp.StatusCode)
	}
}

func TestAuthConfigValidate(t *testing.T) {
	good := HashToken("x")
	for _, tc := range []struct {
		cfg  AuthConfig
		want string
	}{
		{AuthConfig{Tokens: []TokenConfig{{ID: "a", Hash: good, Scopes: []string{"admin"}}, {ID: "b", Hash: HashToken("y"), Scopes: []string{"audience:read"}}}},
			`http.auth.tokens[1].scopes[0]: unknown scope "audience:read"`},
		{AuthConfig{Tokens: []TokenConfig{{ID: "", Hash: good, Scopes: []string{"admin"}}}}, "http.auth.tokens[0].id: must be set"},
		{AuthConfig{Tokens: []TokenConfig{{ID: "a", Hash: "abc", Scopes: []string{"admin"}}}}, "http.auth.tokens[0].hash: must be the 64 hex digits"},
		{AuthConfig{Tokens: []TokenConfig{{ID: "a", Hash: good, Scopes: []string{"admin"}}, {ID: "a", Hash: HashToken("y"), Scopes: []string{"admin"}}}}, `http.auth.tokens[1].id: "a" already used`},
		{AuthConfig{Tokens: []TokenConfig{{ID: "a", Hash: good, Scopes: []string{"admin"}}, {ID: "b", Hash: good, Scopes: []string{"admin"}}}}, "http.auth.tokens[1].hash: same token as tokens[0]"},
		{AuthConfig{Tokens: []TokenConfig{{ID: "a", Hash: good}}}, "http.auth.tokens[0].scopes: must list"},
		{AuthConfig{RateLimit: RateLimitConfig{PerSecond: -1}}, "http.auth.rate_limit.per_second: must be > 0"},
		{AuthConfig{RateLimit: RateLimitConfig{Burst: -1}}, "http.auth.rate_limit.burst: must be >= 1"},
		{AuthConfig{MaxBodyBytes: -5}, "http.auth.max_body_bytes: must be >= 1"},
	} {
		_, err := NewAuth(tc.cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v, want prefix %q", err, tc.want)
		}
	}
}
