package identity

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/datadriven"
	"gopkg.in/yaml.v3"
)

// TestScenarios runs the golden scenarios in testdata/scenarios. Commands:
//
//	new                 a fresh graph; the body, if any, is the identity
//	                    config in YAML (the secret is filled in)
//	batch               one batch, one event per line (see parseEvent);
//	                    prints each event's profile, the merges, the graph
//	remove type=T value=V
//	split profile=N
//	erase profiles=(N,M)  Graph.Erase of the profiles
//	suppress profiles=(N,M) [type=T value=V [sha256]]  Graph.Suppress of the
//	                    profiles, and of one identifier (sha256: by its SHA-256)
//	unsuppress type=T value=V [sha256]  Graph.UnsuppressIdentities of one
//	                    identifier (sha256: by the SHA-256 of V)
//	replace profile=N type=T old=V new=W  Graph.ReplaceIdentifier
//	inactive before=D   Graph.Inactive before 2024-01-01 + D
//	lookup type=T value=V the profile holding an identifier
//	restart             closes and reopens the store
//	graph               prints the graph
//	metrics             prints the non-zero counters
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata/scenarios", func(t *testing.T, path string) {
		var tg *testGraph
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "new":
				cfg := testConfig()
				if d.Input != "" {
					if err := yaml.Unmarshal([]byte(d.Input), &cfg); err != nil {
						return "error: " + err.Error()
					}
					cfg.Secret = "test-secret"
				}
				tg = newTestGraph(t, cfg)
				return ""
			case "batch":
				var evs []testEvent
				for _, line := range strings.Split(d.Input, "\n") {
					tg.off++
					e, err := parseEvent(line, tg.off)
					if err != nil {
						d.Fatalf(t, "%v", err)
					}
					evs = append(evs, e)
				}
				b, ids := tg.process(evs)
				// Rows of suppressed events are gone from the batch.
				msgs := b.Rec.Column(engine.ColMessageID).(*array.String)
				var sb strings.Builder
				for i, j := 0, 0; i < len(evs); i++ {
					if j < len(ids) && msgs.Value(j) == evs[i].msg {
						fmt.Fprintf(&sb, "%s → %d\n", evs[i].msg, ids[j])
						j++
						continue
					}
					fmt.Fprintf(&sb, "%s dropped\n", evs[i].msg)
				}
				for _, dr := range b.Drops {
					fmt.Fprintf(&sb, "drops %s %d\n", dr.Reason, dr.Rows)
				}
				for _, m := range b.Merges {
					fmt.Fprintf(&sb, "merge %v into %d (%s, %s)\n", m.Merged, m.Survivor, m.MessageID, m.Rule)
				}
				sb.WriteString(tg.dump())
				return sb.String()
			case "remove":
				var typ, val string
				d.ScanArgs(t, "type", &typ)
				d.ScanArgs(t, "value", &val)
				if err := tg.g.RemoveIdentifier(typ, val, "req"); err != nil {
					return "error: " + err.Error()
				}
				return tg.dump()
			case "split":
				var id int
				d.ScanArgs(t, "profile", &id)
				if err := tg.g.Split(uint32(id), "req"); err != nil {
					return "error: " + err.Error()
				}
				return tg.dump()
			case "erase":
				// erase profiles=(1,2): Graph.Erase, then the graph.
				var ids []uint32
				for _, a := range d.CmdArgs {
					for _, v := range a.Vals {
						n, err := strconv.ParseUint(v, 10, 32)
						if err != nil {
							d.Fatalf(t, "bad profile id %q", v)
						}
						ids = append(ids, uint32(n))
					}
				}
				if err := tg.g.Erase(t.Context(), ids); err != nil {
					return "error: " + err.Error()
				}
				return tg.dump()
			case "suppress":
				var ids []uint32
				var refs []Ref
				if d.HasArg("type") {
					var typ, val string
					d.ScanArgs(t, "type", &typ)
					d.ScanArgs(t, "value", &val)
					r := Ref{Type: typ, Value: val}
					if d.HasArg("sha256") {
						r = Ref{Type: typ, SHA256: sha256.Sum256([]byte(val)), Hashed: true}
					}
					refs = append(refs, r)
				}
				for _, a := range d.CmdArgs {
					if a.Key != "profiles" {
						continue
					}
					for _, v := range a.Vals {
						if v == "" {
							continue
						}
						n, err := strconv.ParseUint(v, 10, 32)
						if err != nil {
							d.Fatalf(t, "bad profile id %q", v)
						}
						ids = append(ids, uint32(n))
					}
				}
				gr, err := tg.g.Suppress(t.Context(), ids, refs...)
				if err != nil {
					return "error: " + err.Error()
				}
				return fmt.Sprintf("group %d\n", gr) + tg.dump()
			case "unsuppress":
				var typ, val string
				d.ScanArgs(t, "type", &typ)
				d.ScanArgs(t, "value", &val)
				r := Ref{Type: typ, Value: val}
				if d.HasArg("sha256") {
					r = Ref{Type: typ, SHA256: sha256.Sum256([]byte(val)), Hashed: true}
				}
				if err := tg.g.UnsuppressIdentities(t.Context(), []Ref{r}); err != nil {
					return "error: " + err.Error()
				}
				return tg.dump()
			case "replace":
				var id int
				var typ, old, nw string
				d.ScanArgs(t, "profile", &id)
				d.ScanArgs(t, "type", &typ)
				d.ScanArgs(t, "old", &old)
				d.ScanArgs(t, "new", &nw)
				if err := tg.g.ReplaceIdentifier(t.Context(), uint32(id), typ, old, nw); err != nil {
					return "error: " + err.Error() + "\n"
				}
				return tg.dump()
			case "inactive":
				var before string
				d.ScanArgs(t, "before", &before)
				dur, err := time.ParseDuration(before)
				if err != nil {
					d.Fatalf(t, "bad duration %q", before)
				}
				var sb strings.Builder
				err = tg.g.Inactive(testEpoch.Add(dur), func(pid uint32, last time.Time) error {
					fmt.Fprintf(&sb, "profile %d last seen %s\n", pid, last.Format("2006-01-02T15:04"))
					return nil
				})
				if err != nil {
					return "error: " + err.Error() + "\n"
				}
				return sb.String()
			case "lookup":
				// lookup type=T value=V: the profile holding it.
				var typ, val string
				d.ScanArgs(t, "type", &typ)
				d.ScanArgs(t, "value", &val)
				v, err := tg.g.Lookup(typ, val)
				if err != nil {
					return "error: " + err.Error() + "\n"
				}
				return fmt.Sprintf("profile %d\n", v.ProfileID)
			case "restart":
				tg.restart()
				return tg.dump()
			case "graph":
				return tg.dump()
			case "http":
				// Input: "METHOD PATH", then the body.
				line, body, _ := strings.Cut(d.Input, "\n")
				f := strings.Fields(line)
				req := httptest.NewRequest(f[0], f[1], strings.NewReader(body))
				rec := httptest.NewRecorder()
				tg.g.Handler().ServeHTTP(rec, req)
				var out bytes.Buffer
				if err := json.Indent(&out, rec.Body.Bytes(), "", "  "); err != nil {
					out.Reset()
					out.Write(rec.Body.Bytes())
				}
				return fmt.Sprintf("%d %s\n%s", rec.Code, rec.Header().Get("Content-Type"), out.String())
			case "metrics":
				return tg.metricsText()
			}
			d.Fatalf(t, "unknown command %q", d.Cmd)
			return ""
		})
	})
}
