package engine

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Scopes a token can hold. ScopeAdmin grants every scope.
const (
	ScopeAudiencesRead  = "audiences:read"
	ScopeAudiencesWrite = "audiences:write"
	ScopeProfilesRead   = "profiles:read"
	ScopeProfilesWrite  = "profiles:write"
	ScopePrivacyWrite   = "privacy:write"
	ScopeAdmin          = "admin"
)

var knownScopes = []string{ScopeAudiencesRead, ScopeAudiencesWrite, ScopeProfilesRead, ScopeProfilesWrite, ScopePrivacyWrite, ScopeAdmin}

// AuthConfig configures bearer-token authentication of the HTTP API
// (YAML block http.auth).
//
// With no tokens configured authentication is disabled: every request is
// served, without rate limiting, and audited with an empty TokenID. Keep
// the listen address on loopback in that case (the caller logs a warning,
// see Auth.Enabled).
type AuthConfig struct {
	// Tokens lists the accepted tokens. Each is stored as the SHA-256 of
	// the token, in hex, so the config file never holds a usable secret.
	Tokens []TokenConfig `yaml:"tokens"`
	// RateLimit bounds requests per token.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// MaxBodyBytes bounds a request body; larger bodies get 413. Default
	// 1 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// TokenConfig is one accepted bearer token.
type TokenConfig struct {
	// ID names the token in the audit trail and in logs (never the token).
	ID string `yaml:"id"`
	// Hash is the lowercase or uppercase hex SHA-256 of the token
	// (`printf %s "$TOKEN" | sha256sum`).
	Hash string `yaml:"hash"`
	// Scopes the token holds: audiences:read, audiences:write,
	// profiles:read, profiles:write, privacy:write, admin (all of them).
	Scopes []string `yaml:"scopes"`
}

// RateLimitConfig is a token bucket per bearer token: Burst requests at
// once, refilled at PerSecond. Defaults: 50 per second, burst 100.
type RateLimitConfig struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Defaults fills zero fields with their defaults.
func (c *AuthConfig) Defaults() {
	if c.RateLimit.PerSecond == 0 {
		c.RateLimit.PerSecond = 50
	}
	if c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = 100
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
}

// Validate reports the first invalid field, named relative to the auth
// block (the caller prefixes "http.auth.").
func (c AuthConfig) Validate() error {
	ids := map[string]int{}
	hashes := map[string]int{}
	for i, t := range c.Tokens {
		if t.ID == "" {
			return fmt.Errorf("tokens[%d].id: must be set", i)
		}
		if j, ok := ids[t.ID]; ok {
			return fmt.Errorf("tokens[%d].id: %q already used by tokens[%d]", i, t.ID, j)
		}
		ids[t.ID] = i
		h, err := hex.DecodeString(t.Hash)
		if err != nil || len(h) != sha256.Size {
			return fmt.Errorf("tokens[%d].hash: must be the 64 hex digits of the token's SHA-256", i)
		}
		if j, ok := hashes[string(h)]; ok {
			return fmt.Errorf("tokens[%d].hash: same token as tokens[%d]", i, j)
		}
		hashes[string(h)] = i
		if len(t.Scopes) == 0 {
			return fmt.Errorf("tokens[%d].scopes: must list at least one scope", i)
		}
		for k, s := range t.Scopes {
			if !validScope(s) {
				return fmt.Errorf("tokens[%d].scopes[%d]: unknown scope %q (want %s)", i, k, s, strings.Join(knownScopes, ", "))
			}
		}
	}
	if c.RateLimit.PerSecond <= 0 || math.IsInf(c.RateLimit.PerSecond, 0) || math.IsNaN(c.RateLimit.PerSecond) {
		return errors.New("rate_limit.per_second: must be > 0")
	}
	if c.RateLimit.Burst < 1 {
		return errors.New("rate_limit.burst: must be >= 1")
	}
	if c.MaxBodyBytes < 1 {
		return errors.New("max_body_bytes: must be >= 1")
	}
	return nil
}

func validScope(s string) bool {
	for _, k := range knownScopes {
		if s == k {
			return true
		}
	}
	return false
}

// HashToken returns the hex SHA-256 of token, the form TokenConfig.Hash
// takes.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Entry is one audit record of a request to a route that touches personal
// data.
type Entry struct {
	Time time.Time
	// TokenID is the ID of the token that authenticated the request, empty
	// when none did (401) or auth is disabled.
	TokenID string
	// Action is the method and route pattern, e.g.
	// "GET /v1/audiences/{id}/contains": never the concrete path, which may
	// carry personal data.
	Action string
	// Target is what the handler set with SetAuditTarget: an opaque string,
	// a keyed hash of an identifier or a profile id, never plain personal
	// data. Empty when the handler set none.
	Target string
	// Outcome is the HTTP status sent.
	Outcome int
}

// Auditor receives an Entry for every request on a route marked personal
// (RequirePersonal), after the response is written, including requests
// refused by auth. Audit runs on the request goroutine: an implementation
// that writes to disk should be quick or buffer.
type Auditor interface {
	Audit(ctx context.Context, e Entry)
}

// Auth is the bearer-token middleware. It is safe for concurrent use.
type Auth struct {
	cfg     AuthConfig
	tokens  []authToken
	auditor Auditor
	now     func() time.Time

	mu      sync.Mutex
	buckets []bucket // parallel to tokens
}

type authToken struct {
	id     string
	hash   [sha256.Size]byte
	scopes []string
	admin  bool
}

type bucket struct {
	tokens float64
	last   time.Time
}

// AuthOption tunes NewAuth.
type AuthOption func(*Auth)

// WithAuditor sets the audit hook (default: none).
func WithAuditor(a Auditor) AuthOption { return func(x *Auth) { x.auditor = a } }

// WithAuthClock sets the clock of the rate limiter and of audit entries
// (default time.Now).
func WithAuthClock(now func() time.Time) AuthOption { return func(x *Auth) { x.now = now } }

// NewAuth builds the middleware. cfg is completed with Defaults and
// validated; errors name the field under "http.auth.".
func NewAuth(cfg AuthConfig, opts ...AuthOption) (*Auth, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("http.auth.%w", err)
	}
	a := &Auth{cfg: cfg, now: time.Now}
	for _, o := range opts {
		o(a)
	}
	for _, t := range cfg.Tokens {
		var at authToken
		at.id = t.ID
		h, _ := hex.DecodeString(t.Hash)
		copy(at.hash[:], h)
		at.scopes = append([]string(nil), t.Scopes...)
		for _, s := range t.Scopes {
			at.admin = at.admin || s == ScopeAdmin
		}
		a.tokens = append(a.tokens, at)
	}
	a.buckets = make([]bucket, len(a.tokens))
	for i := range a.buckets {
		a.buckets[i].tokens = float64(cfg.RateLimit.Burst)
	}
	return a, nil
}

// Enabled reports whether any token is configured. When it is false,
// Require serves every request (body limit and audit still apply).
func (a *Auth) Enabled() bool { return len(a.tokens) > 0 }

// Require wraps h so that it runs only for a request with a valid bearer
// token that holds scope (or admin), within the token's rate limit. It
// answers 401 (with WWW-Authenticate: Bearer) without a token or with an
// unknown one, 403 when the token lacks the scope, 429 with Retry-After
// when the token's bucket is empty, and 413 when Content-Length exceeds
// max_body_bytes. The body h reads is limited too: reading past the limit
// fails with *http.MaxBytesError (see IsBodyTooLarge). Require panics
// when scope is not one of the Scope constants (a wiring mistake).
func (a *Auth) Require(scope string, h http.Handler) http.Handler {
	return a.wrap(scope, false, h)
}

// RequirePersonal is Require for routes that touch personal data: every
// request is also reported to the Auditor, whatever its outcome.
func (a *Auth) RequirePersonal(scope string, h http.Handler) http.Handler {
	return a.wrap(scope, true, h)
}

type ctxKey int

const (
	ctxTokenID ctxKey = iota
	ctxAudit
)

type auditSlot struct{ target string }

// SetAuditTarget records what a request on a personal route acted on, for
// its audit entry. Pass an opaque value (a keyed hash, a profile id),
// never plain personal data. It is a no-op outside RequirePersonal.
func SetAuditTarget(ctx context.Context, target string) {
	if s, ok := ctx.Value(ctxAudit).(*auditSlot); ok {
		s.target = target
	}
}

// TokenID returns the ID of the token that authenticated the request of
// ctx, "" if none.
func TokenID(ctx context.Context) string {
	id, _ := ctx.Value(ctxTokenID).(string)
	return id
}

// IsBodyTooLarge reports whether err comes from reading past the body
// limit; handlers answer 413 then.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func (a *Auth) wrap(scope string, personal bool, h http.Handler) http.Handler {
	if !validScope(scope) {
		panic("engine: Require with unknown scope " + strconv.Quote(scope))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var slot *auditSlot
		var tokenID string
		rec := &statusWriter{ResponseWriter: w}
		if personal && a.auditor != nil {
			slot = &auditSlot{}
			r = r.WithContext(context.WithValue(r.Context(), ctxAudit, slot))
			defer func() {
				action := r.Pattern
				if action == "" {
					action = r.Method
				} else if !strings.Contains(action, " ") {
					action = r.Method + " " + action
				}
				a.auditor.Audit(r.Context(), Entry{Time: a.now(), TokenID: tokenID, Action: action,
					Target: slot.target, Outcome: rec.status()})
			}()
		}
		if a.Enabled() {
			i, ok := a.authenticate(r.Header.Get("Authorization"))
			if !ok {
				rec.Header().Set("WWW-Authenticate", `Bearer realm="cdpstream"`)
				WriteError(rec, http.StatusUnauthorized, "missing or unknown bearer token")
				return
			}
			t := &a.tokens[i]
			tokenID = t.id
			if !t.admin && !has(t.scopes, scope) {
				rec.Header().Set("WWW-Authenticate", `Bearer realm="cdpstream", error="insufficient_scope", scope="`+scope+`"`)
				WriteError(rec, http.StatusForbidden, "token "+t.id+" lacks scope "+scope)
				return
			}
			if wait := a.take(i); wait > 0 {
				secs := int(math.Ceil(wait.Seconds()))
				rec.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
				WriteError(rec, http.StatusTooManyRequests, "rate limit exceeded for token "+t.id)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), ctxTokenID, t.id))
		}
		if r.ContentLength > a.cfg.MaxBodyBytes {
			WriteError(rec, http.StatusRequestEntityTooLarge, "body: larger than "+strconv.FormatInt(a.cfg.MaxBodyBytes, 10)+" bytes")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(rec, r.Body, a.cfg.MaxBodyBytes)
		}
		h.ServeHTTP(rec, r)
	})
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// authenticate finds the token whose hash matches header's bearer token.
// It compares against every configured hash in constant time, so the time
// taken does not tell which token (or how much of one) matched.
func (a *Auth) authenticate(header string) (int, bool) {
	const prefix = "bearer "
	if len(header) <= len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return -1, false
	}
	tok := strings.TrimSpace(header[len(prefix):])
	if tok == "" {
		return -1, false
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].hash[:]) == 1 {
			found = i
		}
	}
	return found, found >= 0
}

// take removes one request from token i's bucket; when empty it returns
// how long until one is available.
func (a *Auth) take(i int) time.Duration {
	now := a.now()
	rate, burst := a.cfg.RateLimit.PerSecond, float64(a.cfg.RateLimit.Burst)
	a.mu.Lock()
	defer a.mu.Unlock()
	b := &a.buckets[i]
	if !b.last.IsZero() {
		if d := now.Sub(b.last).Seconds(); d > 0 {
			b.tokens = math.Min(burst, b.tokens+d*rate)
		}
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / rate * float64(time.Second))
}

// statusWriter remembers the status sent, for the audit entry, and passes
// Flush through so that streamed responses (NDJSON) still stream.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
