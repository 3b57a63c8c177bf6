package identity

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// unionFind is the oracle: identifiers an event names together belong to
// one person.
type unionFind map[string]string

func (u unionFind) find(x string) string {
	if _, ok := u[x]; !ok {
		u[x] = x
	}
	for u[x] != x {
		u[x] = u[u[x]]
		x = u[x]
	}
	return x
}

func (u unionFind) union(a, b string) { u[u.find(a)] = u.find(b) }

type genIdent struct{ typ, value string }

// randomEvents generates n events over a small universe of identifiers, so
// that events link and re-link profiles often.
func randomEvents(r *rand.Rand, n, universe int) ([]testEvent, [][]genIdent) {
	types := []string{TypeUserID, TypeEmail, TypeAnonymousID, TypeDeviceID}
	evs := make([]testEvent, n)
	ids := make([][]genIdent, n)
	ts := testEpoch
	for i := range evs {
		ts = ts.Add(time.Duration(r.IntN(48)) * time.Hour)
		e := testEvent{msg: fmt.Sprintf("m%d", i), typ: 2, ts: ts, topic: "t", off: int64(i)}
		for k := 1 + r.IntN(3); k > 0; k-- {
			typ := types[r.IntN(len(types))]
			v := fmt.Sprintf("%s-%d", typ[:1], r.IntN(universe))
			if typ == TypeEmail {
				v += "@example.com"
			}
			switch typ {
			case TypeUserID:
				e.user = v
			case TypeAnonymousID:
				e.anon = v
			default:
				e.ids = append(e.ids, [2]string{typ, v})
			}
		}
		if e.user != "" {
			ids[i] = append(ids[i], genIdent{TypeUserID, e.user})
		}
		if e.anon != "" {
			ids[i] = append(ids[i], genIdent{TypeAnonymousID, e.anon})
		}
		for _, x := range e.ids {
			ids[i] = append(ids[i], genIdent{x[0], x[1]})
		}
		evs[i] = e
	}
	return evs, ids
}

// rulesOff is a config without limits, caps or blocked values: resolution
// must equal connected components.
func rulesOff() Config {
	cfg := testConfig()
	cfg.MaxMerges, cfg.MaxIdentifiers = -1, -1
	for _, n := range []string{TypeUserID, TypeEmail, TypeAnonymousID, TypeDeviceID} {
		cfg.Types = append(cfg.Types, TypeConfig{Name: n, Blocked: []string{}, BlockedRegex: []string{}})
	}
	return cfg
}

func TestPropertyRulesOffMatchesUnionFind(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 42))
			tg := newTestGraph(t, rulesOff())
			evs, ids := randomEvents(r, 600, 120)
			uf := unionFind{}
			out := make([]uint32, 0, len(evs))
			for i := 0; i < len(evs); {
				n := min(1+r.IntN(80), len(evs)-i)
				_, pids := tg.process(evs[i : i+n])
				out = append(out, pids...)
				i += n
			}
			for _, x := range ids {
				for _, y := range x[1:] {
					uf.union(x[0].typ+":"+x[0].value, y.typ+":"+y.value)
				}
			}
			// Partitions are identical: a bijection between oracle roots and
			// profiles.
			rootOf := map[uint32]string{}
			profOf := map[string]uint32{}
			for _, x := range ids {
				for _, id := range x {
					pid := tg.profileOf(id.typ, id.value)
					root := uf.find(id.typ + ":" + id.value)
					if r, ok := rootOf[pid]; ok && r != root {
						t.Fatalf("profile %d holds identifiers of two oracle sets", pid)
					}
					if p, ok := profOf[root]; ok && p != pid {
						t.Fatalf("oracle set split over profiles %d and %d", p, pid)
					}
					rootOf[pid], profOf[root] = root, pid
				}
			}
			if len(profOf) < 20 || !strings.Contains(tg.metricsText(), "cdp_identity_merges_total") {
				t.Fatalf("degenerate stream: %d sets", len(profOf))
			}
			// Every event resolved to its identifiers' profile (through
			// redirects, since later events may have merged it).
			for i, x := range ids {
				now := tg.follow(out[i])
				if want := profOf[uf.find(x[0].typ+":"+x[0].value)]; now != want {
					t.Fatalf("event %d resolved to %d (now %d), its identifiers are in %d", i, out[i], now, want)
				}
			}
			if err := tg.g.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// rulesOn has tight limits and caps so that they are hit often.
func rulesOn() Config {
	cfg := testConfig()
	cfg.MaxMerges, cfg.MaxIdentifiers = 4, 7
	cfg.Types = []TypeConfig{
		{Name: TypeUserID, Unique: true},
		{Name: TypeEmail, Limit: Limit{Max: 2, Window: 30 * day}},
		{Name: TypeDeviceID, Limit: Limit{Max: 3}},
		{Name: TypeAnonymousID, Limit: Limit{Max: 3, Window: week}},
	}
	return cfg
}

func TestPropertyRulesOnNeverViolated(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			tg := newTestGraph(t, rulesOn())
			evs, ids := randomEvents(r, 800, 60)
			for i := 0; i < len(evs); {
				n := min(1+r.IntN(60), len(evs)-i)
				_, pids := tg.process(evs[i : i+n])
				for j, pid := range pids {
					if pid == 0 && len(ids[i+j]) > 0 {
						t.Fatalf("event %d with identifiers unresolved", i+j)
					}
				}
				i += n
				checkRules(t, tg)
			}
			// The rules must have been exercised, or this test proves nothing.
			m := tg.metricsText()
			for _, want := range []string{`reason="limit"`, `reason="unique"`, "cdp_identity_merges_total"} {
				if !strings.Contains(m, want) {
					t.Errorf("no %s in\n%s", want, m)
				}
			}
			if err := tg.g.Check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkRules verifies that no profile breaks a limit, unique type or cap.
func checkRules(t *testing.T, tg *testGraph) {
	t.Helper()
	g := tg.g
	for id := uint32(1); id < g.next; id++ {
		p, err := g.loadProfile(id)
		if err != nil || p == nil {
			t.Fatalf("profile %d: %v", id, err)
		}
		if p.redirect != 0 {
			continue
		}
		if mx := g.cfg.MaxMerges; len(p.merged) > mx {
			t.Fatalf("profile %d absorbed %d merges, cap %d", id, len(p.merged), mx)
		}
		if mx := g.cfg.MaxIdentifiers; len(p.idents) > mx {
			t.Fatalf("profile %d holds %d identifiers, cap %d", id, len(p.idents), mx)
		}
		byType := map[*typeInfo][]typeTime{}
		for _, x := range p.idents {
			ti := g.byID[x.typ]
			byType[ti] = append(byType[ti], typeTime{t: ti, first: x.first})
		}
		for ti, tl := range byType {
			if ti.unique && len(tl) > 1 {
				t.Fatalf("profile %d holds %d values of unique type %s", id, len(tl), ti.name)
			}
			sortTimes(tl)
			if ti.limit.Max > 0 {
				if n := maxInWindow(tl, int64(ti.limit.Window/time.Second)); n > ti.limit.Max {
					t.Fatalf("profile %d holds %d %s values in a window, limit %d", id, n, ti.name, ti.limit.Max)
				}
			}
		}
	}
}

func sortTimes(tl []typeTime) {
	for i := 1; i < len(tl); i++ {
		for j := i; j > 0 && tl[j].first < tl[j-1].first; j-- {
			tl[j], tl[j-1] = tl[j-1], tl[j]
		}
	}
}

// TestOpsReplay applies the ops the stage produced to a fresh graph: the
// identity log replays to the same graph.
func TestOpsReplay(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	src := newTestGraph(t, rulesOn())
	var log []Op
	src.g.OnCommit(func(ops []Op) { log = append(log, ops...) })
	evs, _ := randomEvents(r, 500, 50)
	for i := 0; i < len(evs); i += 50 {
		src.process(evs[i : i+50])
	}
	split := uint32(0)
	for id := uint32(1); id < src.g.next && split == 0; id++ {
		if p, _ := src.g.loadProfile(id); p != nil && p.redirect == 0 && len(p.merged) > 1 {
			split = id
		}
	}
	if split == 0 {
		t.Fatal("no merged profile to split")
	}
	if err := src.g.Split(split, "req"); err != nil {
		t.Fatal(err)
	}
	v, err := src.g.Profile(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.g.RemoveIdentifier(v.Identifiers[0].Type, v.Identifiers[0].Value, "req"); err != nil {
		t.Fatal(err)
	}
	// Suppression, rectification and unsuppression are ops too.
	var live []uint32
	for id := uint32(1); id < src.g.next; id++ {
		if p, _ := src.g.loadProfile(id); p != nil && p.redirect == 0 && len(p.idents) > 0 {
			live = append(live, id)
		}
	}
	if len(live) < 3 {
		t.Fatal("too few live profiles")
	}
	if _, err := src.g.Suppress(t.Context(), live[:2]); err != nil {
		t.Fatal(err)
	}
	if _, err := src.g.Suppress(t.Context(), live[2:3]); err != nil {
		t.Fatal(err)
	}
	w, err := src.g.Profile(live[0])
	if err != nil {
		t.Fatal(err)
	}
	x := w.Identifiers[0]
	if err := src.g.ReplaceIdentifier(t.Context(), live[0], x.Type, x.Value, x.Value+"-fixed"); err != nil {
		t.Fatal(err)
	}
	more, _ := randomEvents(r, 100, 50)
	for i := range more {
		more[i].off += int64(len(evs))
	}
	src.process(more)
	if err := src.g.UnsuppressIdentities(t.Context(), []Ref{{Type: x.Type, Value: x.Value + "-fixed"}}); err != nil {
		t.Fatal(err)
	}
	if d := src.dump(); !strings.Contains(d, "suppression group 2") || strings.Contains(d, "suppression group 1") {
		t.Fatalf("suppression not as set up:\n%s", d)
	}
	// The replica's decoded graph equals the source's. Its bytes do not:
	// each store draws its own profile keys and nonces, and the sealed
	// chunks of a record follow its commits. Two replicas applying the
	// same ops in the same commits with the same (seeded) random source
	// are equal byte for byte, which is what the tests' determinism rests
	// on.
	dst, dst2 := newTestGraph(t, rulesOn()), newTestGraph(t, rulesOn())
	for i := 0; i < len(log); i += 97 {
		for _, g := range []*Graph{dst.g, dst2.g} {
			if err := g.Apply(log[i:min(i+97, len(log))]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if a, b := src.dump(), dst.dump(); a != b {
		t.Fatalf("replayed graph differs:\n%s\nwant:\n%s", b, a)
	}
	if a, b := rawState(t, dst.db), rawState(t, dst2.db); a != b {
		t.Fatal("two replicas with the same random source differ byte for byte")
	}
	if len(log) < 100 {
		t.Fatalf("only %d ops", len(log))
	}
}

// rawState returns every key and value of the keyring's and identity's
// families, hex-encoded.
func rawState(t *testing.T, db *pebble.DB) string {
	t.Helper()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{engine.PrefixKeyring}, UpperBound: []byte{prefixType + 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	var sb strings.Builder
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if k[0] != engine.PrefixKeyring && k[0] < prefixMeta {
			continue
		}
		fmt.Fprintf(&sb, "%x %x\n", k, it.Value())
	}
	return sb.String()
}

// profileOf returns the profile holding an identifier, 0 if none.
func (tg *testGraph) profileOf(typ, value string) uint32 {
	tg.t.Helper()
	g := tg.g
	g.mu.Lock()
	defer g.mu.Unlock()
	x, err := g.normIdent(typ, value)
	if err != nil {
		tg.t.Fatal(err)
	}
	var h hash
	g.hashInto(&h, x.Type, []byte(x.Value))
	e, err := g.lookupIdent(&h)
	if err != nil {
		tg.t.Fatal(err)
	}
	return e.pid
}

// follow returns the live profile of id, following its redirect.
func (tg *testGraph) follow(id uint32) uint32 {
	tg.t.Helper()
	p, err := tg.g.loadProfile(id)
	if err != nil || p == nil {
		tg.t.Fatalf("profile %d: %v", id, err)
	}
	if p.redirect != 0 {
		return p.redirect
	}
	return id
}
