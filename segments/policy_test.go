package segments

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/cdpstream/cdpstream/engine"
)

// TestRudderStackKeep is RudderStack's destination-side consent filter.
func TestRudderStackKeep(t *testing.T) {
	ids := func(s ...string) [][]byte {
		out := [][]byte{}
		for _, x := range s {
			out = append(out, []byte(x))
		}
		return out
	}
	for _, tc := range []struct {
		name                   string
		provider, sinkStrategy string
		consents               []string
		evProvider, evStrategy string
		denied                 [][]byte
		keep                   bool
	}{
		{"no denied ids: kept", "oneTrust", "", []string{"C1", "C2"}, "oneTrust", "and", ids(), true},
		{"and: one configured denied drops", "oneTrust", "", []string{"C1", "C2"}, "oneTrust", "and", ids("C2"), false},
		{"and: unrelated denied kept", "oneTrust", "", []string{"C1", "C2"}, "oneTrust", "and", ids("C3"), true},
		{"or: one of two denied kept", "oneTrust", "", []string{"C1", "C2"}, "oneTrust", "or", ids("C1"), true},
		{"or: all denied drops", "ketch", "", []string{"a", "b"}, "ketch", "or", ids("a", "b", "c"), false},
		{"custom: sink strategy or beats event and", "custom", "or", []string{"x", "y"}, "custom", "and", ids("x"), true},
		{"custom: sink strategy and beats event or", "custom", "and", []string{"x", "y"}, "custom", "or", ids("x"), false},
		{"ketch: event strategy and applies", "ketch", "or", []string{"a", "b"}, "ketch", "and", ids("a"), false},
		{"legacy oneTrust: any denied drops", "oneTrust", "", []string{"C1", "C2"}, "", "", ids("C1"), false},
		{"legacy ketch: one of two denied kept", "ketch", "", []string{"a", "b"}, "", "", ids("a"), true},
		{"legacy ketch: all denied drops", "ketch", "", []string{"a", "b"}, "", "", ids("b", "a"), false},
		{"provider is case-sensitive: OneTrust is another provider", "oneTrust", "", []string{"C1"}, "OneTrust", "and", ids("C1"), true},
		{"other provider: kept", "ketch", "", []string{"a"}, "oneTrust", "and", ids("a"), true},
		{"event without strategy, oneTrust provider named: and", "oneTrust", "", []string{"C1", "C2"}, "oneTrust", "", ids("C2"), false},
	} {
		if got := RudderStackKeep(tc.provider, tc.sinkStrategy, tc.consents, tc.evProvider, tc.evStrategy, tc.denied); got != tc.keep {
			t.Errorf("%s: keep=%v, want %v", tc.name, got, tc.keep)
		}
	}
}

// TestRudderStackPolicy runs the block through Select on raw events.
func TestRudderStackPolicy(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPolicy(PolicyConfig{Name: "braze", RudderStack: &RudderStackConfig{Provider: "oneTrust", Consents: []string{"C0002", "C0004"}}}, c)
	if err != nil {
		t.Fatal(err)
	}
	b := makeBatch(t, 1, []row{
		{pid: 1, raw: `{"context":{"consentManagement":{"provider":"oneTrust","resolutionStrategy":"and","deniedConsentIds":["C0004"]}}}`},
		{pid: 1, raw: `{"context":{"consentManagement":{"provider":"oneTrust","resolutionStrategy":"or","deniedConsentIds":["C0004"]}}}`},
		{pid: 1, raw: `{"context":{}}`},
		{pid: 1, raw: `{"context":{"consentManagement":{"provider":"oneTrust","deniedConsentIds":["C0002"]}}}`},
	})
	defer b.Release()
	var reasons []engine.Reason
	sel := p.Select(b, nil, func(_ int, r engine.Reason) { reasons = append(reasons, r) })
	if !reflect.DeepEqual(sel, []int{1, 2}) || len(reasons) != 2 || reasons[0] != ReasonRudderStack {
		t.Fatalf("kept %v, reasons %v", sel, reasons)
	}
	// The same events with the decoder's cut-out, twice: the second time
	// every decision comes from the memo, and must not change.
	var rows []row
	for range 2 {
		for i := range b.Rows() {
			raw := string(b.Rec.Column(engine.ColRaw).(*array.Binary).Value(i))
			cut := `{"context":{"consentManagement":{"provider":"oneTrust"}}}`
			if i != 2 {
				cut = raw // the cut-out of these events is the whole event
			}
			rows = append(rows, row{pid: 1, raw: raw, cut: &cut})
		}
	}
	b2 := makeBatch(t, 2, rows)
	defer b2.Release()
	reasons = nil
	sel = p.Select(b2, nil, func(_ int, r engine.Reason) { reasons = append(reasons, r) })
	if !reflect.DeepEqual(sel, []int{1, 2, 5, 6}) || len(reasons) != 4 || len(p.rmemo) != 4 {
		t.Fatalf("with cut-outs: kept %v, reasons %v, %d memo entries", sel, reasons, len(p.rmemo))
	}
}

// TestIABInEvents: TC, GPP and US Privacy strings in events map to
// purposes; an invalid v2.2 string carries no consent.
func TestIABInEvents(t *testing.T) {
	db := openDB(t, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	const (
		// purposes 1,3,4,7 consented (LiveRamp fixture lr-v20-pubrestrictions)
		tc = "COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA"
		// TCF 2.2 with LI on purpose 3: rejected
		bad = "COvwooAOvwooAB7ABCENAPEYAIAAACAAAIqIAAoAAoAA.QAAo.IAAo"
		// usnat: sale/sharing/targeted advertising all opted out, GPC
		gpp = "DBABLA~CVVVVVVVVVVW.YA"
	)
	b := makeBatch(t, 1, []row{
		{pid: 1, ts: time.Unix(10, 0), raw: `{"context":{"consent":{"tcString":"` + tc + `"}}}`},
		{pid: 2, ts: time.Unix(10, 0), raw: `{"context":{"consent":{"tcString":"` + bad + `"}}}`},
		{pid: 3, ts: time.Unix(10, 0), raw: `{"context":{"consent":{"gppString":"` + gpp + `"}}}`},
		{pid: 4, ts: time.Unix(10, 0), raw: `{"context":{"consent":{"usPrivacy":"1NYN"}}}`},
		{pid: 5, ts: time.Unix(10, 0), raw: `{"consent_state":{"gdpr":{"analytics":{"consented":true,"timestamp_unixtime_ms":5000}},"ccpa":{"data_sale_opt_out":{"consented":true}}}}`},
		{pid: 6, ts: time.Unix(11, 0), raw: `{"context":{"consent":{"tcString":"` + tc + `"}}}`},
	})
	if err := c.Process(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	got := fmt.Sprint(masks(b))
	// 1: analytics needs TCF 1+8 (8 missing) → denied; advertising 1,3,4 → granted; sale default.
	// 2: nothing; 3: advertising and sale opted out; 4: sale opted out;
	// 5: analytics granted, sale opted out.
	want := fmt.Sprint([]uint64{0b110, 0b100, 0b000, 0b000, 0b001, 0b110})
	if got != want {
		t.Fatalf("masks %s, want %s\n%s", got, want, dump(c))
	}
	if d, _ := c.profiles.get(5).get(0); d.Time != 5_000_000 || d.Source != SourceMParticle {
		t.Errorf("mParticle timestamp not used: %+v", d)
	}
	// Row 6 repeats row 1's payload byte for byte: the payload memo
	// answers it, so its TC string is decoded once in all.
	if c.x.cache.miss != 3 || c.x.cache.hits != 0 { // the TC, GPP and US Privacy strings
		t.Errorf("decoded-string cache: %d misses, %d hits; want 3 and 0 (the memo answers the repeat)", c.x.cache.miss, c.x.cache.hits)
	}
	if _, ok := c.x.memo[`{"context":{"consent":{"tcString":"`+tc+`"}}}`]; !ok {
		t.Error("the repeated payload is not in the memo")
	}
	if _, ok := c.x.memo[`{"consent_state":{"gdpr":{"analytics":{"consented":true,"timestamp_unixtime_ms":5000}},"ccpa":{"data_sale_opt_out":{"consented":true}}}}`]; ok {
		t.Error("a payload with its own decision times was memoised")
	}
}

// TestPolicyMatchesNaive: on random streams split into random batches,
// Select keeps exactly the rows a naive per-event evaluation keeps, for
// every policy shape, with and without Process's annotations.
func TestPolicyMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cats := []string{"Analytics", "Advertising", "Functional"}
	for iter := 0; iter < 40; iter++ {
		db := openDB(t, "")
		c, err := New(testConfig(), db, nil)
		if err != nil {
			t.Fatal(err)
		}
		var policies []*Policy
		for _, req := range []string{"all", "any"} {
			for _, unk := range []string{"allow", "deny", "purpose_default"} {
				for _, by := range []string{"profile", "event", "stricter"} {
					p, err := NewPolicy(PolicyConfig{Name: req + unk + by, Purposes: []string{"analytics", "advertising", "sale_of_data"}[:1+rng.IntN(3)],
						Require: req, Unknown: unk, DecideBy: by}, c)
					if err != nil {
						t.Fatal(err)
					}
					policies = append(policies, p)
				}
			}
		}
		if rng.IntN(2) == 0 {
			_ = c.Suppress(uint32(1 + rng.IntN(5)))
		}
		type st struct {
			status Status
			time   int64
		}
		model := map[uint32]map[int]st{}
		// Erasures between batches, and between a batch's Process and its
		// Select (a pipelined runner): the erased ids' rows still come, as
		// batches in flight during an erasure carry them.
		erased := map[uint32]bool{}
		erase := func() {
			pid := uint32(1 + rng.IntN(5))
			if err := c.Erase(pid); err != nil {
				t.Fatal(err)
			}
			delete(model, pid)
			erased[pid] = true
		}
		seq := uint64(0)
		for n := 0; n < 20; n++ {
			if rng.IntN(8) == 0 {
				erase()
			}
			var rows []row
			type view struct{ pk, pg, ek, eg uint64 }
			var views []view
			for k := 1 + rng.IntN(30); k > 0; k-- {
				pid := uint32(rng.IntN(6))
				ts := int64(100 + rng.IntN(1000))
				var ek, eg uint64
				raw := `{"type":"track"}`
				switch rng.IntN(3) {
				case 0: // no consent
				case 1:
					var parts []string
					for i, cat := range cats {
						bit := []int{0, 1, 3}[i]
						ek |= 1 << bit
						switch rng.IntN(3) {
						case 0:
							parts = append(parts, strconv.Quote(cat)+":true")
							eg |= 1 << bit
						case 1:
							parts = append(parts, strconv.Quote(cat)+":false")
						}
					}
					raw = `{"context":{"consent":{"categoryPreferences":{` + strings.Join(parts, ",") + `}}}}`
				case 2:
					ek |= 1 << 2
					if rng.IntN(2) == 0 {
						raw = `{"context":{"gpc":true}}`
					} else {
						raw = `{"context":{"consent":{"usPrivacy":"1YNN"}}}`
						eg |= 1 << 2
					}
				}
				rows = append(rows, row{pid: pid, ts: time.Unix(ts, 0), raw: raw})
				// the model: latest wins, a tie keeps a denial
				if pid != 0 && !erased[pid] {
					if model[pid] == nil {
						model[pid] = map[int]st{}
					}
					for bit := 0; bit < 4; bit++ {
						if ek>>bit&1 == 0 {
							continue
						}
						s := st{Denied, ts}
						if eg>>bit&1 == 1 {
							s.status = Granted
						}
						old, ok := model[pid][bit]
						if !ok || ts > old.time || ts == old.time && s.status == Denied {
							model[pid][bit] = s
						}
					}
				}
				v := view{ek: ek, eg: eg, pk: ek, pg: eg}
				if pid != 0 {
					v.pk, v.pg = 0, 0
					for bit, s := range model[pid] {
						v.pk |= 1 << bit
						if s.status == Granted {
							v.pg |= 1 << bit
						}
					}
				}
				views = append(views, v)
			}
			seq++
			b := makeBatch(t, seq, rows)
			if err := c.Process(context.Background(), b); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(8) == 0 {
				erase()
			}
			for _, p := range policies {
				var want []int
				for i, v := range views {
					if (c.suppressed.Contains(rows[i].pid) || erased[rows[i].pid]) && rows[i].pid != 0 {
						continue
					}
					if naiveKeep(p, v.pk, v.pg, v.ek, v.eg) {
						want = append(want, i)
					}
				}
				got := p.Select(b, nil, nil)
				if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
					t.Fatalf("iter %d batch %d policy %s %v: kept %v, naive %v", iter, n, p.cfg.Name, p.cfg.Purposes, got, want)
				}
				if p.by == byEvent {
					// without the annotation, the raw events decide alike
					c.ann.mu.Lock()
					saved := c.ann.a
					for i := range c.ann.a {
						c.ann.a[i].rec = nil
					}
					c.ann.mu.Unlock()
					got2 := p.Select(b, nil, nil)
					c.ann.mu.Lock()
					c.ann.a = saved
					c.ann.mu.Unlock()
					if !reflect.DeepEqual(got2, got) {
						t.Fatalf("fallback kept %v, annotated %v", got2, got)
					}
				}
			}
			b.Release()
		}
		_ = db.Close()
	}
}

// naiveKeep evaluates a policy on one event, purpose by purpose.
func naiveKeep(p *Policy, pk, pg, ek, eg uint64) bool {
	one := func(k, g uint64) bool {
		granted, anyDenied := 0, false
		need := 0
		for _, name := range p.cfg.Purposes {
			bit, _ := p.c.cat.bitOf(name)
			need++
			switch {
			case k>>bit&1 == 1 && g>>bit&1 == 1:
				granted++
			case k>>bit&1 == 1:
				anyDenied = true
			case p.cfg.Unknown == "allow":
				granted++
			case p.cfg.Unknown == "purpose_default" && p.c.cat.defGranted>>bit&1 == 1:
				granted++
			}
		}
		_ = anyDenied
		if p.cfg.Require == "any" {
			return granted > 0
		}
		return granted == need
	}
	switch p.cfg.DecideBy {
	case "profile":
		return one(pk, pg)
	case "event":
		return one(ek, eg)
	}
	return one(pk, pg) && one(ek, eg)
}
