package privacy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/cdpstream/cdpstream/engine"
)

// TestLifecycle runs the golden request scenarios in testdata/lifecycle:
// real Pebble, real HTTP over loopback, fakes of the Work interfaces, a
// fake clock, and Step instead of Run so every step is deterministic.
func TestLifecycle(t *testing.T) {
	datadriven.Walk(t, "testdata/lifecycle", func(t *testing.T, path string) {
		var e *env
		var next string // next_cursor of the last list
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "new":
				var cfg Config
				if d.HasArg("wait") {
					var s string
					d.ScanArgs(t, "wait", &s)
					cfg.WaitingPeriod, _ = time.ParseDuration(s)
				}
				if d.HasArg("retention") {
					var s string
					d.ScanArgs(t, "retention", &s)
					cfg.Retention.InactiveAfter, _ = time.ParseDuration(s)
				}
				if d.HasArg("batch") {
					d.ScanArgs(t, "batch", &cfg.Retention.Batch)
				}
				e = newEnv(t, cfg)
				return ""
			case "person":
				p := personArgs(t, d)
				e.w.persons[p.pid] = p
				return ""
			case "appear":
				// appear step=S pid=N TYPE=VALUE...: as step S starts, a
				// profile N holding those identities appears (events
				// replayed after a restart, resolved anew).
				var step string
				d.ScanArgs(t, "step", &step)
				p := personArgs(t, d)
				e.w.hooks[step] = func() { e.w.persons[p.pid] = p }
				return ""
			case "seen":
				// seen pid=N seen=DATE: the person's events arrive again.
				var pid uint64
				var day string
				d.ScanArgs(t, "pid", &pid)
				d.ScanArgs(t, "seen", &day)
				e.w.persons[uint32(pid)].seen, _ = time.Parse(time.DateOnly, day)
				return ""
			case "merge":
				// merge pid=N into=M: an event links the two; N is merged
				// into M and its identifiers move there.
				var pid, into uint64
				d.ScanArgs(t, "pid", &pid)
				d.ScanArgs(t, "into", &into)
				from, to := e.w.persons[uint32(pid)], e.w.persons[uint32(into)]
				to.ids = append(to.ids, from.ids...)
				from.ids = nil
				e.w.merged[uint32(pid)] = uint32(into)
				return ""
			case "submit":
				body := []byte(d.Input)
				if body == nil || len(bytes.TrimSpace(body)) == 0 {
					body = buildBody(t, d, e)
				}
				code, h, b := e.do("POST", "/opendsr/requests", body)
				return show(e, code, h, b, body)
			case "get":
				code, h, b := e.do("GET", "/opendsr/requests/"+idArg(t, d), nil)
				return show(e, code, h, b, nil)
			case "list":
				// list [status=S] [type=T] [limit=N] [more]: more continues
				// from the previous listing's next_cursor.
				q := url.Values{}
				for _, a := range d.CmdArgs {
					switch a.Key {
					case "more":
						q.Set("cursor", next)
					default:
						q.Set(a.Key, a.Vals[0])
					}
				}
				code, h, b := e.do("GET", "/opendsr/requests?"+q.Encode(), nil)
				var l Listing
				if json.Unmarshal(b, &l) == nil {
					next = l.Next
				}
				return show(e, code, h, b, nil)
			case "retain":
				id, err := e.svc.Retain(e.ctx)
				if err != nil {
					return "error: " + err.Error()
				}
				if id == "" {
					return "nothing to erase"
				}
				return "retention request stored"
			case "cancel":
				code, h, b := e.do("DELETE", "/opendsr/requests/"+idArg(t, d), nil)
				return show(e, code, h, b, nil)
			case "advance":
				var s string
				d.ScanArgs(t, "d", &s)
				dur, _ := time.ParseDuration(s)
				e.clock = e.clock.Add(dur)
				return "now " + e.clock.Format(time.RFC3339)
			case "fail":
				var step string
				var n int
				d.ScanArgs(t, "step", &step)
				d.ScanArgs(t, "n", &n)
				e.w.fail[step] = n
				return ""
			case "crash":
				// The step's component sees the process stop while it runs.
				var step string
				d.ScanArgs(t, "step", &step)
				e.w.crash[step] = e.stop
				return ""
			case "step":
				n, err := e.svc.Step(e.ctx)
				out := fmt.Sprintf("ran %d", n)
				if err != nil {
					out += " (interrupted: " + err.Error() + ")"
				}
				return out + "\n" + state(t, e)
			case "restart":
				e.restart()
				return state(t, e)
			case "state":
				return state(t, e)
			case "world":
				var sb strings.Builder
				for _, k := range sortedKeys(e.w.erased) {
					fmt.Fprintf(&sb, "erased by %s: %v\n", k, e.w.erased[k])
				}
				for _, n := range e.w.notified {
					fmt.Fprintf(&sb, "%s\n", n)
				}
				for p := range e.w.suppressed {
					fmt.Fprintf(&sb, "suppressed %d\n", p)
				}
				for _, r := range e.w.rectified {
					fmt.Fprintf(&sb, "rectified %s\n", r)
				}
				return sb.String()
			case "callbacks":
				e.svc.deliverPending(e.ctx)
				cert := e.certificate()
				var sb strings.Builder
				for _, c := range e.cb.take() {
					ok := "signature ok"
					if err := VerifySignature(cert, c.body, c.sig); err != nil {
						ok = "BAD SIGNATURE: " + err.Error()
					}
					var cb Callback
					_ = json.Unmarshal(c.body, &cb)
					fmt.Fprintf(&sb, "%s %s %s (%s, domain %s)\n", cb.ID[:8], cb.Status, cb.ExpectedTime, ok, c.dom)
				}
				return sb.String()
			case "results":
				st, err := e.svc.Get(idArg(t, d))
				if err != nil {
					return err.Error()
				}
				resp, err := http.Get(st.ResultsURL)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var buf bytes.Buffer
				_, _ = buf.ReadFrom(resp.Body)
				return fmt.Sprintf("%d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), buf.String())
			case "audit":
				es, err := Entries(e.db, 1, 0)
				if err != nil {
					t.Fatal(err)
				}
				var sb strings.Builder
				for _, en := range es {
					fmt.Fprintf(&sb, "%d %s %s actor=%q outcome=%s\n", en.Seq, en.Time.Format("15:04:05"), en.Action, en.Actor, en.Outcome)
				}
				if err := Verify(e.db); err != nil {
					sb.WriteString("verify: " + err.Error() + "\n")
				} else {
					sb.WriteString("verify: ok\n")
				}
				return sb.String()
			}
			t.Fatalf("unknown command %s", d.Cmd)
			return ""
		})
	})
}

var tokenRE = regexp.MustCompile(`/opendsr/results/[0-9a-f]{32}`)

func idArg(t *testing.T, d *datadriven.TestData) string {
	var id string
	d.ScanArgs(t, "id", &id)
	if len(id) == 1 {
		return uuidOf(id)
	}
	return id
}

// buildBody makes a request from args: id=a type=erasure and identities
// as type=value (email, controller_customer_id), callbacks=yes.
func buildBody(t *testing.T, d *datadriven.TestData, e *env) []byte {
	m := map[string]any{"regulation": "gdpr", "submitted_time": "2024-01-01T00:00:00Z", "api_version": "2.0"}
	var ids []map[string]string
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "id":
			m["subject_request_id"] = uuidOf(a.Vals[0])
		case "type":
			m["subject_request_type"] = a.Vals[0]
		case "regulation":
			m["regulation"] = a.Vals[0]
		case "callbacks":
			m["status_callback_urls"] = []string{e.cb.srv.URL + "/opendsr/callbacks"}
		case "rectify":
			m["extensions"] = map[string]any{"cdpstream": map[string]any{"rectification": map[string]any{
				"traits": map[string]any{"name": a.Vals[0]}}}}
		default:
			ids = append(ids, map[string]string{"identity_type": a.Key, "identity_value": a.Vals[0], "identity_format": "raw"})
		}
	}
	m["subject_identities"] = ids
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// show prints an HTTP answer: status, whether it is signed, and the body
// with encoded_request checked and elided and the server's address
// replaced by SERVER.
func show(e *env, code int, h http.Header, b, sent []byte) string {
	signed := ""
	if h.Get("X-OpenDSR-Signature") != "" {
		if err := VerifySignature(e.svc.sig.cert, b, h.Get("X-OpenDSR-Signature")); err != nil {
			signed = " BAD SIGNATURE"
		} else {
			signed = " signed"
		}
	}
	var m map[string]any
	if json.Unmarshal(b, &m) == nil {
		if enc, ok := m["encoded_request"].(string); ok {
			raw, _ := base64.StdEncoding.DecodeString(enc)
			if bytes.Equal(raw, sent) {
				m["encoded_request"] = "<the request body>"
			}
		}
		b, _ = json.Marshal(m)
	}
	s := strings.ReplaceAll(string(b), e.srv.URL, "SERVER")
	s = tokenRE.ReplaceAllString(s, "/opendsr/results/TOKEN")
	return fmt.Sprintf("%d%s %s", code, signed, s)
}

// state prints every request record and the queue and index sizes.
func state(t *testing.T, e *env) string {
	var sb strings.Builder
	err := e.svc.scan([]byte{prefixRequest}, []byte{prefixRequest + 1}, func(_, v []byte) error {
		r, err := decodeRecord(v)
		if err != nil {
			return err
		}
		fmt.Fprintf(&sb, "request %s %s %s received %s expected %s", r.Req.ID[:8], r.Req.Type, r.Status,
			r.Received.Format("15:04"), r.Expected.Format("01-02T15:04"))
		if !r.finished() {
			fmt.Fprintf(&sb, " due %s", r.Due.Format("01-02T15:04:05"))
		}
		if len(r.Profiles) > 0 {
			fmt.Fprintf(&sb, " profiles %v", r.Profiles)
		}
		if r.Attempts > 0 {
			fmt.Fprintf(&sb, " attempts %d last_error %s", r.Attempts, r.LastError)
		}
		// identities N sealed: the record holds them sealed under the
		// request's key (opened here to count them); a record holding any
		// in plain would show "plain".
		switch {
		case r.open && len(r.Req.Identities) > 0:
			fmt.Fprintf(&sb, " identities %d plain", len(r.Req.Identities))
		case r.Sealed != nil:
			if err := e.svc.openRecord(r); err != nil {
				return err
			}
			fmt.Fprintf(&sb, " identities %d sealed", len(r.Req.Identities))
		default:
			fmt.Fprintf(&sb, " identities %d", len(r.Req.Identities))
		}
		if r.ResultsToken != "" {
			fmt.Fprintf(&sb, " results %d until %s", r.ResultsCount, r.ResultsExpires.Format("01-02T15:04"))
		}
		sb.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count := func(p byte) int {
		n := 0
		_ = e.svc.scan([]byte{p}, []byte{p + 1}, func(_, _ []byte) error { n++; return nil })
		return n
	}
	// keys: data keys of the id space (requests with sealed identities,
	// live exports); each is destroyed when its request finishes or its
	// export expires.
	keys := 0
	lo := engine.KeyringIDKey(nil, engine.KeyID{})
	hi := append(engine.KeyringIDKey(nil, engine.KeyID{})[:1:1], lo[1]+1)
	_ = e.svc.scan(lo, hi, func(_, _ []byte) error { keys++; return nil })
	fmt.Fprintf(&sb, "queue %d, active identities %d, outbox %d, keys %d\n", count(prefixQueue), count(prefixActive), count(prefixCallback), keys)
	return sb.String()
}

// personArgs reads a person from pid=N [seen=DATE] TYPE=VALUE...; other
// arguments (step) are not identities.
func personArgs(t *testing.T, d *datadriven.TestData) *person {
	var pid uint64
	d.ScanArgs(t, "pid", &pid)
	p := &person{pid: uint32(pid)}
	for _, a := range d.CmdArgs {
		switch a.Key {
		case "pid", "step":
		case "seen":
			p.seen, _ = time.Parse(time.DateOnly, a.Vals[0])
		default:
			p.ids = append(p.ids, Identity{Type: a.Key, Value: a.Vals[0], Format: FormatRaw})
		}
	}
	return p
}
