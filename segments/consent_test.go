package segments

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/datadriven"
	"github.com/cockroachdb/pebble"
)

func maskNames(c *Consent, m uint64) string {
	var out []string
	for _, p := range c.cat.purposes {
		if m>>p.Bit&1 == 1 {
			out = append(out, p.Name)
		}
	}
	return "[" + strings.Join(out, " ") + "]"
}

// TestConsentTransitions runs testdata/transitions: consent changes
// (grant, deny, late older decision, expiry, merge with conflicting
// consent, API, restart) printing each row's mask and the whole state
// after each step.
func TestConsentTransitions(t *testing.T) {
	datadriven.Walk(t, "testdata/transitions", func(t *testing.T, path string) {
		dir := t.TempDir()
		db := openDB(t, dir)
		defer func() { _ = db.Close() }()
		clock := time.Unix(1000, 0)
		cfg := testConfig()
		newConsent := func() *Consent {
			c, err := New(cfg, db, nil, WithClock(func() time.Time { return clock }))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		c := newConsent()
		var last *engine.Batch
		seq := uint64(0)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "config":
				for _, a := range d.CmdArgs {
					if a.Key == "merge" {
						cfg.Merge = a.Vals[0]
					}
				}
				c = newConsent()
				return "ok\n"
			case "batch":
				var rows []row
				for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
					f := strings.SplitN(line, " ", 3)
					pid, _ := strconv.Atoi(f[0])
					ts, _ := strconv.Atoi(f[1])
					rows = append(rows, row{pid: uint32(pid), ts: time.Unix(int64(ts), 0), raw: f[2]})
				}
				seq++
				b := makeBatch(t, seq, rows)
				for _, a := range d.CmdArgs {
					if a.Key == "merge" {
						s, _ := strconv.Atoi(a.Vals[0])
						mg := engine.Merge{Survivor: uint32(s)}
						for _, v := range a.Vals[1:] {
							m, _ := strconv.Atoi(v)
							mg.Merged = append(mg.Merged, uint32(m))
						}
						b.Merges = append(b.Merges, mg)
					}
				}
				if err := c.Process(context.Background(), b); err != nil {
					return "error: " + err.Error() + "\n"
				}
				if last != nil {
					last.Release()
				}
				last = b
				var sb strings.Builder
				for i, m := range masks(b) {
					fmt.Fprintf(&sb, "row %d mask=%s\n", i, maskNames(c, m))
				}
				return sb.String() + dump(c)
			case "clock":
				var s int
				d.ScanArgs(t, "t", &s)
				clock = time.Unix(int64(s), 0)
				c.mu.Lock()
				c.expire(clock.UnixMicro())
				c.mu.Unlock()
				return dump(c)
			case "api":
				var method, url string
				d.ScanArgs(t, "method", &method)
				d.ScanArgs(t, "url", &url)
				req := httptest.NewRequest(method, url, strings.NewReader(d.Input))
				w := httptest.NewRecorder()
				c.Handler().ServeHTTP(w, req)
				return fmt.Sprintf("%d\n%s", w.Code, w.Body.String())
			case "state":
				return dump(c)
			case "restart":
				c = newConsent()
				return dump(c)
			case "suppress":
				var pid int
				d.ScanArgs(t, "pid", &pid)
				if err := c.Suppress(uint32(pid)); err != nil {
					return err.Error()
				}
				return dump(c)
			case "filter":
				pc := PolicyConfig{Name: "sink"}
				for _, a := range d.CmdArgs {
					switch a.Key {
					case "purposes":
						pc.Purposes = a.Vals
					case "require":
						pc.Require = a.Vals[0]
					case "unknown":
						pc.Unknown = a.Vals[0]
					case "decide_by":
						pc.DecideBy = a.Vals[0]
					}
				}
				p, err := NewPolicy(pc, c)
				if err != nil {
					return "error: " + err.Error() + "\n"
				}
				var sb strings.Builder
				sel := p.Select(last, nil, func(row int, r engine.Reason) { fmt.Fprintf(&sb, "row %d dropped: %s\n", row, r) })
				fmt.Fprintf(&sb, "kept %v\n", sel)
				return sb.String()
			}
			t.Fatalf("unknown command %s", d.Cmd)
			return ""
		})
		if last != nil {
			last.Release()
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Purposes = nil }, "purposes: at least one"},
		{func(c *Config) { c.Purposes[3].TCF = []int{12} }, "purposes[3].tcf: purpose 12"},
		{func(c *Config) { c.Purposes[1].Bit = 0 }, "purposes[1].bit: 0 already used by purposes[0]"},
		{func(c *Config) { c.Purposes[2].Default = "" }, "purposes[2].default"},
		{func(c *Config) { c.Purposes[0].Name = "Analytics" }, "purposes[0].name"},
		{func(c *Config) { c.Purposes[2].USOptOut = []string{"gpc"} }, "purposes[2].us_opt_out: unknown signal"},
		{func(c *Config) { c.Merge = "oldest" }, "merge:"},
		{func(c *Config) { c.Fields.TCF = "context..tc" }, "fields.tcf:"},
		{func(c *Config) { c.Purposes[0].Bit = 64 }, "purposes[0].bit: 64"},
	} {
		cfg := testConfig()
		cfg.Defaults()
		tc.mut(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
	cfg := testConfig()
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// No purposes: an explicit "needs no purpose" (suppression still applies).
	if err := (PolicyConfig{}).Validate(); err != nil {
		t.Errorf("empty policy: %v", err)
	}
	for _, tc := range []struct {
		p    PolicyConfig
		want string
	}{
		{PolicyConfig{Purposes: []string{"analytics"}}, "require:"},
		{PolicyConfig{Purposes: []string{"analytics"}, Require: "all"}, "unknown:"},
		{PolicyConfig{Purposes: []string{"analytics"}, Require: "all", Unknown: "deny"}, "decide_by:"},
		{PolicyConfig{RudderStack: &RudderStackConfig{Provider: "OneTrust", Consents: []string{"C1"}}}, "rudderstack.provider"},
		{PolicyConfig{RudderStack: &RudderStackConfig{Provider: "custom", Consents: []string{"C1"}}}, "rudderstack.resolutionStrategy"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.p, err, tc.want)
		}
	}
	db := openDB(t, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewPolicy(PolicyConfig{Purposes: []string{"nope"}, Require: "all", Unknown: "deny", DecideBy: "event"}, c); err == nil || !strings.Contains(err.Error(), `purposes: "nope"`) {
		t.Errorf("unknown purpose: %v", err)
	}
}

func TestHTTPErrors(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Handler()
	for _, tc := range []struct {
		method, url, body string
		code              int
		want              string
	}{
		{"GET", "/v1/profiles/x/consent", "", 400, "not a profile id"},
		{"PUT", "/v1/profiles/1/consent", `{"analytics":{"status":"maybe"}}`, 400, "analytics.status"},
		{"PUT", "/v1/profiles/1/consent", `{"nope":{"status":"granted"}}`, 400, "nope: not a purpose"},
		{"PUT", "/v1/profiles/1/consent", `{"analytics":{"status":"denied","expires_at":"2030-01-01T00:00:00Z"}}`, 400, "only a grant expires"},
		{"PUT", "/v1/profiles/1/consent", `{"analytics":{"status":"granted","source":"merge"}}`, 400, "analytics.source"},
		{"PUT", "/v1/profiles/1/consent", `[1]`, 400, "body:"},
		{"GET", "/v1/consent/explain?sink=none&profile_id=1", "", 404, "no consent policy"},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.url, strings.NewReader(tc.body)))
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) || !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("%s %s: %d %s, want %d %q", tc.method, tc.url, w.Code, w.Body.String(), tc.code, tc.want)
		}
	}
	_ = http.MethodGet
	_ = pebble.Sync
}

// TestStampGranularity: a repeated decision moves the held time in memory
// at once, but is written only when its profile was last written at least
// StampGranularity ago by the stage's clock, so after a restart the held
// time is the last one written.
func TestStampGranularity(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir)
	defer db.Close()
	cfg := testConfig()
	cfg.StampGranularity = time.Minute
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	clock := t0
	open := func() *Consent {
		c, err := New(cfg, db, nil, WithClock(func() time.Time { return clock }))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	const grant = `{"context":{"consent":{"categoryPreferences":{"Analytics":true}}}}`
	held := func(c *Consent) time.Time {
		t.Helper()
		v := c.View(7).Purposes["analytics"]
		if v.Timestamp == nil {
			t.Fatal("no analytics decision held")
		}
		return *v.Timestamp
	}
	c := open()
	process := func(seq uint64, at time.Duration) {
		t.Helper()
		clock = t0.Add(at) // events processed as they happen
		b := makeBatch(t, seq, []row{{pid: 7, ts: t0.Add(at), raw: grant}})
		if err := c.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		b.Release()
		if got := held(c); !got.Equal(t0.Add(at)) {
			t.Fatalf("held time in memory after the repeat at +%v: %v", at, got)
		}
	}
	for i, at := range []time.Duration{0, 10 * time.Second, 50 * time.Second} {
		process(uint64(i+1), at)
	}
	// Restart: the repeats within a minute of the first write were not written.
	if got := held(open()); !got.Equal(t0) {
		t.Fatalf("after restart: held %v, want %v (repeats within the granularity are not written)", got, t0)
	}
	// A minute after the last write, a repeat is written.
	process(9, 70*time.Second)
	if got := held(open()); !got.Equal(t0.Add(70 * time.Second)) {
		t.Fatalf("after restart: held %v, want the repeat a minute after the last write", got)
	}
	// What counts is processing time, not event time: a repeat stamped ten
	// minutes later but processed 10 s after the last write is not written
	// (a backlog replays a day of events in seconds).
	clock = t0.Add(80 * time.Second)
	b := makeBatch(t, 10, []row{{pid: 7, ts: t0.Add(10 * time.Minute), raw: grant}})
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if got := held(open()); !got.Equal(t0.Add(70 * time.Second)) {
		t.Fatalf("after restart: held %v, want +70s (the later repeat came 10 s after the last write)", got)
	}
	// A different status is always written.
	const deny = `{"context":{"consent":{"categoryPreferences":{"Analytics":false}}}}`
	clock = t0.Add(85 * time.Second)
	b = makeBatch(t, 11, []row{{pid: 7, ts: t0.Add(11 * time.Minute), raw: deny}})
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Release()
	if v := open().View(7).Purposes["analytics"]; v.Status != "denied" {
		t.Fatalf("after restart: %+v, want the denial written at once", v)
	}
}
