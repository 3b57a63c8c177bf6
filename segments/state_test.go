package segments

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/cockroachdb/pebble"

	"github.com/cdpstream/cdpstream/engine"
)

// stateModel is the consent semantics of the package doc, written out
// naively: per profile and purpose one decision, the latest wins, a tie
// keeps a denial (or an identical decision); merges per purpose by merge
// rule. It knows nothing of the stage's table, minT, memo or epochs.
// Erased profiles (since the last restart) hold nothing and get nothing.
type stateModel struct {
	restrictive bool
	p           map[uint32]map[int]Decision
	erased      map[uint32]bool
}

func (m *stateModel) erase(pid uint32) {
	delete(m.p, pid)
	m.erased[pid] = true
}

func (m *stateModel) apply(pid uint32, bit int, d Decision) bool {
	if m.p[pid] == nil {
		m.p[pid] = map[int]Decision{}
	}
	prev, had := m.p[pid][bit]
	if had && (d.Time < prev.Time || d.Time == prev.Time && (d == prev || prev.Status == Denied)) {
		return false
	}
	m.p[pid][bit] = d
	return true
}

// merge reports whether rows of merged apply to survivor: not when either
// is erased. Merged into an erased survivor, merged is erased too.
func (m *stateModel) merge(survivor, merged uint32, now int64) bool {
	switch {
	case m.erased[merged]:
		return false
	case m.erased[survivor]:
		m.erase(merged)
		return false
	}
	pm, ok := m.p[merged]
	if survivor == merged || !ok {
		return true
	}
	if m.p[survivor] == nil {
		m.p[survivor] = map[int]Decision{}
	}
	for bit, dm := range pm {
		ds, ok := m.p[survivor][bit]
		wins := !ok
		if ok {
			em, es := dm.effective(now), ds.effective(now)
			switch {
			case m.restrictive && (em == Denied) != (es == Denied):
				wins = em == Denied
			case dm.Time != ds.Time:
				wins = dm.Time > ds.Time
			default:
				wins = dm.Status == Denied && ds.Status != Denied
			}
		}
		if wins {
			m.p[survivor][bit] = dm
		}
	}
	delete(m.p, merged)
	return true
}

// masks returns pid's effective known and granted purposes at now.
func (m *stateModel) masks(pid uint32, now int64) (known, granted uint64) {
	for bit, d := range m.p[pid] {
		switch d.effective(now) {
		case Granted:
			known |= 1 << bit
			granted |= 1 << bit
		case Denied:
			known |= 1 << bit
		}
	}
	return known, granted
}

// check compares c's decisions and bitmaps with the model's.
func (m *stateModel) check(t *testing.T, c *Consent, now int64, when string) {
	t.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	got := map[uint32]map[int]Decision{}
	c.profiles.each(func(pid uint32, p *profile) {
		got[pid] = map[int]Decision{}
		for b := p.set; b != 0; b &= b - 1 {
			d, _ := p.get(tz(b))
			got[pid][tz(b)] = d
		}
		minT := p.d[0].Time
		for _, d := range p.d {
			minT = min(minT, d.Time)
		}
		if p.minT != minT {
			t.Fatalf("%s: profile %d: minT %d, oldest decision %d", when, pid, p.minT, minT)
		}
	})
	want := map[uint32]map[int]Decision{}
	for pid, ds := range m.p {
		if len(ds) > 0 {
			want[pid] = ds
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: decisions\n got %v\nwant %v", when, got, want)
	}
	var er []uint32
	for pid := range m.erased {
		er = append(er, pid)
	}
	slices.Sort(er)
	if fmt.Sprint(c.erased.ToArray()) != fmt.Sprint(er) {
		t.Fatalf("%s: erased %v, want %v", when, c.erased.ToArray(), er)
	}
	for _, pu := range c.cat.purposes {
		var g, d []uint32
		for pid, ds := range m.p {
			if x, ok := ds[pu.Bit]; ok {
				switch x.effective(now) {
				case Granted:
					g = append(g, pid)
				case Denied:
					d = append(d, pid)
				}
			}
		}
		slices.Sort(g)
		slices.Sort(d)
		if fmt.Sprint(c.granted[pu.Bit].ToArray()) != fmt.Sprint(g) || fmt.Sprint(c.denied[pu.Bit].ToArray()) != fmt.Sprint(d) {
			t.Fatalf("%s: %s bitmaps granted=%v denied=%v, want %v %v", when, pu.Name,
				c.granted[pu.Bit].ToArray(), c.denied[pu.Bit].ToArray(), g, d)
		}
	}
}

// TestProcessMatchesModel: random streams of events with consent (older,
// equal and newer than what the profile holds, repeated payloads, own
// mParticle times, expiring grants), merges, API PUTs, clock steps,
// erasures and restarts, in random batches: after every step the stage's
// decisions, bitmaps and each row's consent_mask equal a naive model's,
// and so do those a restart loads from Pebble. Rows and merges keep
// naming erased ids, as batches in flight during an erasure do, until a
// restart (after which identity resolves nothing to them: they leave the
// stream for fresh ids).
func TestProcessMatchesModel(t *testing.T) {
	type payload struct {
		raw string
		// decisions the event carries: bit → status, and own time (µs, 0
		// = the event's)
		st  map[int]Status
		own map[int]int64
		src map[int]Source
	}
	seg := func(a, ad, f int) payload { // 0 missing, 1 true, 2 false
		var parts []string
		p := payload{st: map[int]Status{}, src: map[int]Source{}}
		for i, v := range []int{a, ad, f} {
			name := []string{"Analytics", "Advertising", "Functional"}[i]
			bit := []int{0, 1, 3}[i]
			p.st[bit], p.src[bit] = Denied, SourceSegment
			switch v {
			case 1:
				parts = append(parts, `"`+name+`":true`)
				p.st[bit] = Granted
			case 2:
				parts = append(parts, `"`+name+`":false`)
			}
		}
		p.raw = `{"context":{"consent":{"categoryPreferences":{` + strings.Join(parts, ",") + `}}}}`
		return p
	}
	for _, restrictive := range []bool{false, true} {
		for iter := 0; iter < 25; iter++ {
			rng := rand.New(rand.NewPCG(uint64(iter), 7))
			name := fmt.Sprintf("restrictive=%v/iter=%d", restrictive, iter)
			dir := t.TempDir()
			db := openDB(t, dir)
			clock := time.Unix(2000, 0)
			cfg := testConfig()
			if restrictive {
				cfg.Merge = MergeMostRestrictive
			}
			open := func() *Consent {
				c, err := New(cfg, db, nil, WithClock(func() time.Time { return clock }))
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			c := open()
			m := &stateModel{restrictive: restrictive, p: map[uint32]map[int]Decision{}, erased: map[uint32]bool{}}
			// ids on several table pages, one far out
			ids := []uint32{1, 2, 3, 4, 1023, 1024, 1025, 5000, 1 << 20}
			fresh := uint32(6000) // replaces an erased id at a restart
			var payloads []payload
			for a := 0; a < 3; a++ {
				for ad := 0; ad < 3; ad++ {
					payloads = append(payloads, seg(a, ad, rng.IntN(3)))
				}
			}
			payloads = append(payloads,
				payload{raw: `{"context":{"gpc":true}}`, st: map[int]Status{2: Denied}, src: map[int]Source{2: SourceGPC}},
				payload{raw: `{"context":{"consent":{"usPrivacy":"1YNN"}}}`, st: map[int]Status{2: Granted}, src: map[int]Source{2: SourceUSP}},
				payload{raw: `{"type":"track"}`},
			)
			seq := uint64(0)
			// swept is the clock of the stage's last expiry sweep (at every
			// batch, PUT and start): the bitmaps hold the state as of then.
			swept := clock.UnixMicro()
			for step := 0; step < 60; step++ {
				now := clock.UnixMicro()
				switch r := rng.IntN(20); {
				case r == 0:
					swept = now
					c = open()
					// The erased set is not persisted; ids are never reused.
					for i, pid := range ids {
						if m.erased[pid] {
							ids[i] = fresh
							fresh += 700
						}
					}
					clear(m.erased)
					m.check(t, c, now, name+": restart")
					continue
				case r == 1:
					clock = clock.Add(time.Duration(rng.IntN(3)) * 30 * time.Minute)
					continue
				case r == 2:
					pid := ids[rng.IntN(len(ids))]
					if err := c.Erase(pid); err != nil {
						t.Fatal(err)
					}
					m.erase(pid)
					m.check(t, c, swept, fmt.Sprintf("%s: erase %d", name, pid))
					continue
				case r == 3:
					pid := ids[rng.IntN(len(ids))]
					ts := time.Unix(int64(1000+rng.IntN(40)), 0).UTC()
					status := []string{"granted", "denied"}[rng.IntN(2)]
					body := fmt.Sprintf(`{"analytics":{"status":%q,"timestamp":%q}}`, status, ts.Format(time.RFC3339))
					d := Decision{Status: Denied, Time: ts.UnixMicro(), Source: SourceAPI}
					if status == "granted" {
						d.Status = Granted
						if rng.IntN(2) == 0 {
							ex := ts.Add(time.Duration(1+rng.IntN(3)) * 20 * time.Minute)
							body = fmt.Sprintf(`{"analytics":{"status":"granted","timestamp":%q,"expires_at":%q}}`, ts.Format(time.RFC3339), ex.Format(time.RFC3339))
							d.Expires = ex.UnixMicro()
						}
					}
					w := httptest.NewRecorder()
					c.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPut, fmt.Sprintf("/v1/profiles/%d/consent", pid), strings.NewReader(body)))
					switch {
					case m.erased[pid]:
						if w.Code != http.StatusGone {
							t.Fatalf("%s: PUT of erased %d: %d %s", name, pid, w.Code, w.Body)
						}
					case w.Code != http.StatusOK:
						t.Fatalf("%s: PUT: %d %s", name, w.Code, w.Body)
					default:
						m.apply(pid, 0, d)
					}
					swept = now
					m.check(t, c, now, name+": PUT "+body)
					continue
				}
				seq++
				swept = now
				var rows []row
				var merges []engine.Merge
				if rng.IntN(6) == 0 {
					s := ids[rng.IntN(len(ids))]
					mg := engine.Merge{Survivor: s}
					for k := rng.IntN(2); k >= 0; k-- {
						if x := ids[rng.IntN(len(ids))]; x != s {
							mg.Merged = append(mg.Merged, x)
						}
					}
					merges = append(merges, mg)
				}
				redir := map[uint32]uint32{}
				for _, mg := range merges {
					for _, x := range mg.Merged {
						if m.merge(mg.Survivor, x, now) {
							redir[x] = mg.Survivor
						}
					}
				}
				var want []uint64
				for k := 1 + rng.IntN(40); k > 0; k-- {
					pid := uint32(0)
					if rng.IntN(10) != 0 {
						pid = ids[rng.IntN(len(ids))]
					}
					// mostly around "now" in event time, so that rows are
					// newer, equal and older than what profiles hold
					ts := int64(1000+rng.IntN(40)) * 1e6
					pl := payloads[rng.IntN(len(payloads))]
					raw := pl.raw
					own := map[int]int64{}
					if rng.IntN(8) == 0 {
						// mParticle analytics with its own time, beside the payload
						ms := int64(1000+rng.IntN(40)) * 1000
						raw = `{"consent_state":{"gdpr":{"analytics":{"consented":` + fmt.Sprint(rng.IntN(2) == 0) +
							`,"timestamp_unixtime_ms":` + fmt.Sprint(ms) + `}}}}`
						consented := strings.Contains(raw, "true")
						pl = payload{st: map[int]Status{0: Denied}, src: map[int]Source{0: SourceMParticle}}
						if consented {
							pl.st[0] = Granted
						}
						own[0] = ms * 1000
					}
					r := row{pid: pid, ts: time.UnixMicro(ts), raw: raw}
					if rng.IntN(2) == 0 {
						// as the decoder cuts out the consent fields: the
						// payloads are in cut-out shape, "{}" when none
						cut := raw
						if len(pl.st) == 0 {
							cut = "{}"
						}
						r.raw = `{"type":"track","event":"e","userId":"u","properties":{"consent":1},` + raw[1:]
						r.cut = &cut
					}
					rows = append(rows, r)
					target := pid
					if s, ok := redir[pid]; ok {
						target = s
					}
					if m.erased[target] {
						want = append(want, 0) // nothing read, nothing recorded
						continue
					}
					var ek, eg uint64
					for bit, st := range pl.st {
						ek |= 1 << bit
						if st == Granted {
							eg |= 1 << bit
						}
						if target == 0 {
							continue
						}
						d := Decision{Status: st, Time: ts, Source: pl.src[bit]}
						if o := own[bit]; o != 0 {
							d.Time = o
						}
						if st == Granted && c.cat.ttl[bit] > 0 {
							d.Expires = d.Time + c.cat.ttl[bit]
						}
						m.apply(target, bit, d)
					}
					k, g := ek, eg
					if target != 0 {
						k, g = m.masks(target, now)
					}
					want = append(want, g|c.cat.defGranted&^k)
				}
				b := makeBatch(t, seq, rows)
				b.Merges = merges
				if err := c.Process(context.Background(), b); err != nil {
					t.Fatal(err)
				}
				if got := masks(b); !slices.Equal(got, want) {
					t.Fatalf("%s: batch %d masks\n got %x\nwant %x", name, seq, got, want)
				}
				b.Release()
				m.check(t, c, now, fmt.Sprintf("%s: batch %d", name, seq))
			}
			c = open()
			clear(m.erased)
			m.check(t, c, clock.UnixMicro(), name+": final restart")
			_ = db.Close()
		}
	}
}

// TestLoad: the start-up rebuild (decisions cut from slabs, bitmaps filled
// a run at a time, the expiry heap built once) gives, for random stored
// profiles, the masks and bitmaps a decision-by-decision evaluation gives,
// and schedules the grants that have not lapsed yet: they lapse on time.
func TestLoad(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	rng := rand.New(rand.NewPCG(7, 9))
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	nowUs := now.UnixMicro()
	type want struct{ granted, denied uint64 }
	wants := map[uint32]want{}
	var expiring int
	wb := db.NewBatch()
	// Ids sparse and across many runs of loadRun; now and then a profile
	// with a decision for every purpose.
	for pid := uint32(1); pid < 40_000; pid += 1 + uint32(rng.IntN(3)) {
		var p profile
		var w want
		nbits := 1 + rng.IntN(4)
		if pid%997 == 0 {
			nbits = 400
		}
		for range nbits {
			bit := rng.IntN(MaxPurposes)
			d := Decision{Status: Granted, Source: 1, Time: nowUs - int64(rng.IntN(1e9))}
			switch rng.IntN(4) {
			case 0:
				d.Status = Denied
			case 1:
				d.Expires = nowUs - 1 // lapsed
			case 2:
				d.Expires = nowUs + int64(1+rng.IntN(1e6)) // lapses later
			}
			p.put(bit, d)
		}
		for b := p.set; b != 0; b &= b - 1 {
			bit := tz(b)
			d, _ := p.get(bit)
			switch d.effective(nowUs) {
			case Granted:
				w.granted |= 1 << bit
				if d.Expires != 0 {
					expiring++
				}
			case Denied:
				w.denied |= 1 << bit
			}
		}
		wants[pid] = w
		if err := wb.Set(profileKey(nil, prefixProfile, pid), appendProfile(nil, &p), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	clock := now
	c, err := New(testConfig(), db, nil, WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for bit := range MaxPurposes {
			g, d := roaring.New(), roaring.New()
			for pid, w := range wants {
				if w.granted>>bit&1 == 1 {
					g.Add(pid)
				}
				if w.denied>>bit&1 == 1 {
					d.Add(pid)
				}
			}
			if !g.Equals(c.granted[bit]) || !d.Equals(c.denied[bit]) {
				t.Fatalf("%s, bit %d: granted %d denied %d profiles, want %d and %d", when, bit,
					c.granted[bit].GetCardinality(), c.denied[bit].GetCardinality(), g.GetCardinality(), d.GetCardinality())
			}
		}
		for pid, w := range wants {
			p := c.profiles.get(pid)
			if p == nil || p.granted != w.granted || p.denied != w.denied {
				t.Fatalf("%s, profile %d: %+v, want masks %+v", when, pid, p, w)
			}
		}
	}
	check("after load")
	// Loaded profiles share slabs: growing one (a new purpose) or
	// deleting one must leave its neighbours' decisions alone (on a second
	// load of the same store, so c stays as loaded).
	c2, err := New(testConfig(), db, nil, WithClock(func() time.Time { return clock }))
	if err != nil {
		t.Fatal(err)
	}
	var a, b uint32
	for pid := uint32(1); a == 0; pid++ {
		if p := c2.profiles.get(pid); p != nil && c2.profiles.get(pid+1) != nil && p.set != ^uint64(0) {
			a, b = pid, pid+1
		}
	}
	pa, pb := c2.profiles.get(a), c2.profiles.get(b)
	beforeA, beforeB := slices.Clone(pa.d), slices.Clone(pb.d)
	free := tz(^pa.set)
	pa.put(free, Decision{Status: Denied, Source: 1, Time: nowUs})
	if d, _ := pa.get(free); d.Status != Denied || len(pa.d) != len(beforeA)+1 {
		t.Fatalf("profile %d after a new purpose: %+v", a, pa.d)
	}
	if !slices.Equal(pb.d, beforeB) {
		t.Fatalf("growing profile %d changed its neighbour %d: %+v, was %+v", a, b, pb.d, beforeB)
	}
	c2.profiles.del(a)
	if !slices.Equal(pb.d, beforeB) {
		t.Fatalf("deleting profile %d changed its neighbour %d: %+v, was %+v", a, b, pb.d, beforeB)
	}
	if len(c.exp) != expiring || expiring == 0 {
		t.Fatalf("%d expiries scheduled, want %d", len(c.exp), expiring)
	}
	// The scheduled grants lapse within the next second: half a second
	// on, those due by then (and only those) have lapsed; two seconds
	// on, all.
	for _, step := range []time.Duration{500 * time.Millisecond, 2 * time.Second} {
		clock = now.Add(step)
		at := clock.UnixMicro()
		c.expire(at)
		left := 0
		for pid, w := range wants {
			p := c.profiles.get(pid)
			for b := p.set; b != 0; b &= b - 1 {
				bit := tz(b)
				if d, _ := p.get(bit); d.Status == Granted && d.Expires > nowUs {
					if d.Expires <= at {
						w.granted &^= 1 << bit
					} else {
						left++
					}
				}
			}
			wants[pid] = w
		}
		check(fmt.Sprintf("%v on", step))
		if len(c.exp) != left || (step < time.Second) != (left > 0) {
			t.Fatalf("%v on: %d expiries left, want %d", step, len(c.exp), left)
		}
	}
}
