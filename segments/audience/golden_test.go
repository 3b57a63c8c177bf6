package audience

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/datadriven"
)

// TestGolden feeds events to the audience stage and prints the records
// and every audience's members after each step. Commands:
//
//	clock T                          set the clock (RFC 3339 or +DURATION)
//	define / update                  input: a definition as JSON
//	delete id=X
//	batch                            input lines:
//	    identify PID {traits}
//	    track PID NAME [T] [{properties}] [context={...}]   (T defaults to the clock)
//	    merge SURVIVOR MERGED...
//	consent                          input lines: PID PURPOSE granted|denied|unknown
//	                                 (the consent stage's state; no re-evaluation)
//	sweep
//	refresh PID...
//	query                            input: an expression
//	info id=X
//	restart                          reopen the store over the same Pebble
//
// Every file runs twice: traits in plain, and sealed under a keyring
// (the same output: encryption changes nothing a reader sees).
func TestGolden(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testGolden(t, false) })
	t.Run("sealed", func(t *testing.T) { testGolden(t, true) })
}

func testGolden(t *testing.T, sealed bool) {
	datadriven.Walk(t, "testdata/golden", func(t *testing.T, path string) {
		db := openDB(t)
		now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		clock := func() time.Time { return now }
		cv := newFakeConsent("advertising", "analytics")
		var chg []Change
		opens := byte(0)
		open := func() *Store {
			opts := []Option{WithClock(clock), WithConsent(cv), WithOnChange(func(c []Change) {
				chg = append(chg, c...)
			})}
			if sealed {
				opens++
				opts = append(opts, WithKeyring(newTestKeyring(t, db, opens)))
			}
			s, err := New(Config{}, db, opts...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		s := open()
		defer func() { s.Close() }()
		seq := uint64(0)
		out := func() string {
			s.Wait()
			res := fmtChanges(chg) + dumpMembers(s)
			chg = chg[:0]
			return res
		}
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "clock":
				arg := d.CmdArgs[0].Key
				if dur, ok := strings.CutPrefix(arg, "+"); ok {
					dd, err := ParseDuration(dur)
					if err != nil {
						t.Fatal(err)
					}
					now = now.Add(dd)
				} else {
					tt, err := time.Parse(time.RFC3339, arg)
					if err != nil {
						t.Fatal(err)
					}
					now = tt
				}
				return now.Format(time.RFC3339)
			case "define", "update":
				def, err := ParseDefinition([]byte(d.Input))
				if err != nil {
					return "error: " + err.Error()
				}
				var in Info
				if d.Cmd == "define" {
					in, err = s.Create(def)
				} else {
					in, err = s.Update(def)
				}
				if err != nil {
					return "error: " + err.Error()
				}
				s.Wait()
				in, _ = s.Get(in.ID)
				return fmt.Sprintf("%s v%d backfill %d/%d\n", in.ID, in.Version, in.Backfill.Done, in.Backfill.Total) + out()
			case "delete":
				var id string
				d.ScanArgs(t, "id", &id)
				if err := s.Delete(id); err != nil {
					return "error: " + err.Error()
				}
				return out()
			case "batch":
				var evs []ev
				var merges []engine.Merge
				for _, line := range strings.Split(d.Input, "\n") {
					f := strings.Fields(line)
					if len(f) == 0 {
						continue
					}
					pid, err := strconv.ParseUint(f[1], 10, 32)
					if err != nil {
						t.Fatalf("%s: %v", line, err)
					}
					switch f[0] {
					case "identify":
						evs = append(evs, identify(uint32(pid), strings.Join(f[2:], " ")))
					case "track":
						at, props := now, ""
						rest := f[3:]
						if len(rest) > 0 && !strings.HasPrefix(rest[0], "{") {
							if at, err = time.Parse(time.RFC3339, rest[0]); err != nil {
								t.Fatal(err)
							}
							rest = rest[1:]
						}
						ctxJSON := ""
						if len(rest) > 0 && strings.HasPrefix(rest[len(rest)-1], "context=") {
							ctxJSON = strings.TrimPrefix(rest[len(rest)-1], "context=")
							rest = rest[:len(rest)-1]
						}
						props = strings.Join(rest, " ")
						e := track(uint32(pid), f[2], at, props)
						if ctxJSON != "" {
							e.raw = strings.TrimSuffix(e.raw, "}") + `,"context":` + ctxJSON + "}"
						}
						evs = append(evs, e)
					case "merge":
						m := engine.Merge{Survivor: uint32(pid), Time: now}
						for _, x := range f[2:] {
							id, _ := strconv.ParseUint(x, 10, 32)
							m.Merged = append(m.Merged, uint32(id))
						}
						merges = append(merges, m)
					default:
						t.Fatalf("unknown batch line %q", line)
					}
				}
				seq++
				b := makeBatch(seq, evs, now)
				b.Merges = merges
				defer b.Release()
				if err := s.Process(context.Background(), b); err != nil {
					return "error: " + err.Error()
				}
				return out()
			case "consent":
				for _, line := range strings.Split(d.Input, "\n") {
					f := strings.Fields(line)
					pid, _ := strconv.ParseUint(f[0], 10, 32)
					cv.set(uint32(pid), f[1], f[2])
				}
				return "ok"
			case "sweep":
				n, err := s.Sweep(context.Background())
				if err != nil {
					return "error: " + err.Error()
				}
				return fmt.Sprintf("%d changes\n", n) + out()
			case "refresh":
				var pids []uint32
				for _, a := range d.CmdArgs {
					p, _ := strconv.ParseUint(a.Key, 10, 32)
					pids = append(pids, uint32(p))
				}
				if _, err := s.Refresh(pids...); err != nil {
					return "error: " + err.Error()
				}
				return out()
			case "query":
				e, err := ParseExpr(strings.TrimSpace(d.Input))
				if err != nil {
					return "error: " + err.Error()
				}
				r, err := s.Query(e, true, 0, 1000)
				if err != nil {
					return "error: " + err.Error()
				}
				n, _ := s.Query(e, false, 0, 0)
				if n.Count != r.Count {
					t.Fatalf("count %d != members count %d", n.Count, r.Count)
				}
				return fmt.Sprintf("%s\ncount %d: %v\n", e, r.Count, r.Members)
			case "info":
				var id string
				d.ScanArgs(t, "id", &id)
				in, err := s.Get(id)
				if err != nil {
					return "error: " + err.Error()
				}
				vs, _ := s.Versions(id)
				b, _ := json.Marshal(struct {
					ID       string
					Version  uint32
					Size     uint64
					Versions int
					Backfill Progress
				}{in.ID, in.Version, in.Size, len(vs), in.Backfill})
				return string(b)
			case "restart":
				s.Close()
				s = open()
				s.Wait()
				chg = chg[:0]
				return dumpMembers(s)
			}
			t.Fatalf("unknown command %q", d.Cmd)
			return ""
		})
	})
}
