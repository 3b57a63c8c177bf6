package audience

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
)

type auditLog struct {
	mu sync.Mutex
	e  []engine.Entry
}

func (a *auditLog) Audit(_ context.Context, e engine.Entry) {
	a.mu.Lock()
	a.e = append(a.e, e)
	a.mu.Unlock()
}

type fakeResolver map[string]uint32

func (f fakeResolver) Lookup(typ, value string) (uint32, bool, error) {
	if typ != "email" {
		return 0, false, fmt.Errorf("unknown identifier type %q", typ)
	}
	id, ok := f[value]
	return id, ok, nil
}

type apiEnv struct {
	s     *Store
	srv   *httptest.Server
	audit *auditLog
	cv    *fakeConsent
	seq   uint64
}

func newAPI(t *testing.T, rl engine.RateLimitConfig) *apiEnv {
	t.Helper()
	cv := newFakeConsent("advertising")
	s, err := New(Config{}, openDB(t), WithConsent(cv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	audit := &auditLog{}
	auth, err := engine.NewAuth(engine.AuthConfig{Tokens: []engine.TokenConfig{
		{ID: "reader", Hash: engine.HashToken("read"), Scopes: []string{engine.ScopeAudiencesRead}},
		{ID: "writer", Hash: engine.HashToken("write"), Scopes: []string{engine.ScopeAudiencesRead, engine.ScopeAudiencesWrite}},
		{ID: "profiles", Hash: engine.HashToken("prof"), Scopes: []string{engine.ScopeProfilesRead}},
	}, RateLimit: rl}, engine.WithAuditor(audit))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	Mount(mux, s.Routes(fakeResolver{"a@example.com": 2}), auth)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiEnv{s: s, srv: srv, audit: audit, cv: cv}
}

func (e *apiEnv) call(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
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
	return resp.StatusCode, resp.Header, string(b)
}

func (e *apiEnv) process(t *testing.T, evs ...ev) {
	t.Helper()
	e.seq++
	b := makeBatch(e.seq, evs, time.Now())
	defer b.Release()
	if err := e.s.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPAuth(t *testing.T) {
	e := newAPI(t, engine.RateLimitConfig{PerSecond: 0.01, Burst: 3})
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/v1/audiences", "", "", 401},
		{"GET", "/v1/audiences", "wrong", "", 401},
		{"GET", "/v1/audiences", "prof", "", 403},
		{"POST", "/v1/audiences", "read", `{"id":"x","condition":{"audience":"y"}}`, 403},
		{"GET", "/v1/audiences", "read", "", 200},
		{"GET", "/openapi.json", "", "", 200},
		{"GET", "/v1/audiences", "read", "", 200},
		{"GET", "/v1/audiences/x", "read", "", 404},
		{"GET", "/v1/audiences", "read", "", 429}, // burst of 3 spent
	} {
		code, hdr, body := e.call(t, tc.method, tc.path, tc.token, tc.body)
		if code != tc.want {
			t.Fatalf("%s %s (%q): %d, want %d: %s", tc.method, tc.path, tc.token, code, tc.want, body)
		}
		if code == 429 && hdr.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
}

func TestHTTPAudiences(t *testing.T) {
	e := newAPI(t, engine.RateLimitConfig{})
	e.process(t, identify(1, `{"plan":"pro"}`), identify(2, `{"plan":"pro"}`), identify(3, `{"plan":"free"}`))

	check := func(method, path, body string, want int, contains string) string {
		t.Helper()
		code, _, got := e.call(t, method, path, "write", body)
		if code != want || !strings.Contains(got, contains) {
			t.Fatalf("%s %s %s: %d %s, want %d containing %q", method, path, body, code, got, want, contains)
		}
		return got
	}
	check("POST", "/v1/audiences", `{"id":"pro","condition":{"and":[{"trait":{"path":"plan","op":"eq","value":"pro"}},{"event":{"name":"x","count":{"min":0}}},{"event":{"name":"o","count":{"min":-2}}}]}}`,
		400, `"path": "condition.and[2].event.count.min"`)
	check("POST", "/v1/audiences", `{"id":"pro","condition":{"trait":{"path":"plan","op":"eq","value":"pro"}},"colour":1}`,
		400, `unknown field \"colour\"`)
	check("POST", "/v1/audiences", `{"id":"Pro!","condition":{"trait":{"path":"plan","op":"exists"}}}`, 400, `"path": "id"`)
	check("POST", "/v1/audiences", `{"id":"pro","condition":{"trait":{"path":"plan","op":"eq","value":"pro"}}}`, 201, `"version": 1`)
	e.s.Wait()
	check("POST", "/v1/audiences", `{"id":"pro","condition":{"trait":{"path":"plan","op":"exists"}}}`, 409, "already exists")
	check("POST", "/v1/audiences", `{"id":"pro_ads","activation_purpose":"advertising","condition":{"audience":"pro"}}`, 201, `"id": "pro_ads"`)
	e.s.Wait()
	got := check("GET", "/v1/audiences/pro", "", 200, `"size": 2`)
	if !strings.Contains(got, `"done": 3`) {
		t.Fatalf("back-fill progress missing: %s", got)
	}
	check("GET", "/v1/audiences/pro_ads", "", 200, `"size": 0`)
	check("PUT", "/v1/audiences/pro", `{"id":"other","condition":{"trait":{"path":"plan","op":"exists"}}}`, 400, `"path": "id"`)
	check("PUT", "/v1/audiences/pro", `{"condition":{"trait":{"path":"plan","op":"exists"}}}`, 200, `"version": 2`)
	e.s.Wait()
	check("GET", "/v1/audiences", "", 200, `"size": 3`)
	check("DELETE", "/v1/audiences/pro", "", 409, "used by pro_ads")

	// contains, by profile id and by identifier
	check("GET", "/v1/audiences/pro/contains?profile_id=3", "", 200, `"member": true`)
	check("GET", "/v1/audiences/pro/contains?profile_id=99", "", 200, `"member": false`)
	check("GET", "/v1/audiences/pro/contains?type=email&value=a@example.com", "", 200, `"profile_id": 2`)
	check("GET", "/v1/audiences/pro/contains?type=email&value=b@example.com", "", 404, "no profile")
	check("GET", "/v1/audiences/pro/contains?profile_id=x", "", 400, "profile_id")
	e.cv.set(2, "advertising", StateGranted)
	check("GET", "/v1/audiences/pro_ads/contains?profile_id=2", "", 200, `"member": true`)
	check("GET", "/v1/audiences/pro_ads/contains?profile_id=1", "", 200, `"member": false`)

	// query
	check("POST", "/v1/query", `{"expression":"pro AND NOT consent:advertising"}`, 200, `"count": 2`)
	got = check("POST", "/v1/query", `{"expression":"pro AND NOT pro_ads","members":true,"limit":1}`, 200, `"count": 2`)
	if !strings.Contains(got, `"cursor": "1"`) {
		t.Fatalf("no cursor: %s", got)
	}
	check("POST", "/v1/query", `{"expression":"pro AND NOT pro_ads","members":true,"cursor":"1"}`, 200, `"members": [`)
	check("POST", "/v1/query", `{"expression":"pro AND (churned"}`, 400, `expected \")\", found the end`)
	check("POST", "/v1/query", `{"expression":"pro AND churned"}`, 404, `unknown audience \"churned\"`)

	// audit: personal routes only, with opaque targets
	e.audit.mu.Lock()
	entries := append([]engine.Entry(nil), e.audit.e...)
	e.audit.mu.Unlock()
	var actions []string
	for _, en := range entries {
		if en.TokenID != "writer" || strings.Contains(en.Target, "@") {
			t.Fatalf("bad audit entry %+v", en)
		}
		actions = append(actions, fmt.Sprintf("%s %s %d", en.Action, en.Target, en.Outcome))
	}
	want := []string{
		"GET /v1/audiences/{id}/contains audience:pro profile:3 200",
		"GET /v1/audiences/{id}/contains audience:pro profile:99 200",
		"GET /v1/audiences/{id}/contains audience:pro profile:2 200",
		"GET /v1/audiences/{id}/contains audience:pro profile:none 404",
		"GET /v1/audiences/{id}/contains  400",
		"GET /v1/audiences/{id}/contains audience:pro_ads profile:2 200",
		"GET /v1/audiences/{id}/contains audience:pro_ads profile:1 200",
		"POST /v1/query query:(pro AND NOT consent:advertising) 200",
		"POST /v1/query query:(pro AND NOT pro_ads) 200",
		"POST /v1/query query:(pro AND NOT pro_ads) 200",
		"POST /v1/query  400",
		"POST /v1/query query:(pro AND churned) 404",
	}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit entries:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}

	// OpenAPI lists every route.
	_, _, doc := e.call(t, "GET", "/openapi.json", "", "")
	var parsed struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal([]byte(doc), &parsed); err != nil {
		t.Fatal(err)
	}
	for _, r := range e.s.Routes(nil) {
		if _, ok := parsed.Paths[r.Path][strings.ToLower(r.Method)]; !ok {
			t.Errorf("openapi.json lacks %s %s", r.Method, r.Path)
		}
	}
	check("DELETE", "/v1/audiences/pro_ads", "", 204, "")
	check("GET", "/v1/audiences/pro_ads", "", 404, "not found")
}

// readPage reads one NDJSON page of members.
func readPage(t *testing.T, e *apiEnv, id string, cursor uint32, limit int) (ids []uint32, next uint32, more bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/audiences/%s/members?cursor=%d&limit=%d", e.srv.URL, id, cursor, limit), nil)
	req.Header.Set("Authorization", "Bearer read")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("members: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			ProfileID *uint32 `json:"profile_id"`
			Cursor    string  `json:"cursor"`
			More      bool    `json:"more"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if line.ProfileID != nil {
			ids = append(ids, *line.ProfileID)
			continue
		}
		c, err := strconv.ParseUint(line.Cursor, 10, 32)
		if err != nil {
			t.Fatalf("cursor line %q", sc.Text())
		}
		return ids, uint32(c), line.More
	}
	t.Fatalf("no cursor line (err %v)", sc.Err())
	return nil, 0, false
}

// TestHTTPMembersCursor pages through an audience while a writer keeps
// moving other profiles in and out: every profile that is a member
// throughout appears exactly once, ids ascend across pages, and nothing is
// repeated.
func TestHTTPMembersCursor(t *testing.T) {
	e := newAPI(t, engine.RateLimitConfig{PerSecond: 1e6, Burst: 1e6})
	const n = 6000
	var evs []ev
	for pid := uint32(1); pid <= n; pid++ {
		evs = append(evs, identify(pid, fmt.Sprintf(`{"in":%v}`, pid%3 == 0)))
	}
	e.process(t, evs...)
	if _, err := e.s.Create(Definition{ID: "in", Condition: Condition{Trait: &TraitCond{Path: "in", Op: "eq", Value: json.RawMessage("true")}}}); err != nil {
		t.Fatal(err)
	}
	e.s.Wait()
	// Profiles pid%3==0 stay members; the others flip in and out.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		flip := false
		for round := 0; ; round++ {
			select {
			case <-stop:
				return
			default:
			}
			flip = !flip
			var evs []ev
			for pid := uint32(1 + round%2); pid <= n; pid += 3 {
				if pid%3 != 0 {
					evs = append(evs, identify(pid, fmt.Sprintf(`{"in":%v}`, flip)))
				}
			}
			// Profiles beyond n join too, so the tail keeps growing.
			evs = append(evs, identify(n+1+uint32(round), `{"in":true}`))
			e.seq++
			b := makeBatch(e.seq, evs, time.Now())
			if err := e.s.Process(context.Background(), b); err != nil {
				t.Error(err)
			}
			b.Release()
		}
	}()
	seen := map[uint32]int{}
	var last uint32
	cursor, pages := uint32(0), 0
	for {
		ids, next, more := readPage(t, e, "in", cursor, 97)
		for _, id := range ids {
			if id <= last {
				t.Fatalf("id %d after %d: not ascending", id, last)
			}
			last = id
			seen[id]++
		}
		pages++
		cursor = next
		if !more {
			break
		}
	}
	close(stop)
	<-done
	for pid := uint32(3); pid <= n; pid += 3 {
		if seen[pid] != 1 {
			t.Fatalf("stable member %d seen %d times", pid, seen[pid])
		}
	}
	if pages < n/3/97 {
		t.Fatalf("only %d pages", pages)
	}
	// Past the end: an empty page that says so.
	ids, next, more := readPage(t, e, "in", ^uint32(0)-1, 10)
	if len(ids) != 0 || more || next != ^uint32(0)-1 {
		t.Fatalf("past the end: %v %d %v", ids, next, more)
	}
}
