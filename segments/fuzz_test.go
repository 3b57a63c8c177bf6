package segments

import (
	"bytes"
	"testing"
)

// decidingSeeds are events carrying one consent format each, which the
// test catalogue maps to decisions; otherSeeds are nearly right.
var decidingSeeds = []string{
	`{"context":{"consent":{"categoryPreferences":{"Analytics":true,"Advertising":false}}}}`,
	`{"context":{"consent":{"categoryPreferences":{}}}}`, // present: mapped categories missing are denied
	`{"context":{"consentManagement":{"provider":"oneTrust","resolutionStrategy":"and","allowedConsentIds":["C0001"],"deniedConsentIds":["C0002","C0004"]}}}`,
	`{"consent_state":{"gdpr":{"analytics":{"consented":true,"timestamp_unixtime_ms":1700000000000,"document":"v1","location":"eu"}},"ccpa":{"data_sale_opt_out":{"consented":true}}}}`,
	`{"context":{"consent":{"tcString":"COvzTO5OvzTO5BRAAAENAPCoALIAADgAAAAAAewAwABAAlAB6ABBFADBQAQA9hAAAcAA"}}}`,
	`{"context":{"consent":{"usPrivacy":"1YYN"}}}`,
	`{"context":{"gpc":true}}`,
}

var otherSeeds = []string{
	`{"context":{"consent":{"categoryPreferences":null}}}`,
	`{"context":{"consentManagement":{"provider":"ketch","allowedConsentIds":{"a":"analytics"},"deniedConsentIds":"targeted_advertising"}}}`,
	`{"consent_state":{"gdpr":{"analytics":{"consented":"yes","timestamp_unixtime_ms":-1}}}}`,
	`{"context":{"consent":{"tcString":"CP"}}}`,
	`{"context":{"consent":{"gppString":"DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"}}}`,
	`{"context":{"consent":{"gppString":"DBABLA~BVQqAAAAAgA.QA"}}}`,
	`{"context":{"consent":{"usPrivacy":"1---"},"gpc":"true"}}`,
	`{"context":`, `[]`, `"x"`, ``,
}

// FuzzExtract feeds arbitrary events to the consent extractor (Segment,
// RudderStack, mParticle, TCF, GPP, USP, GPC). It must not panic, and
// what it reports must be well formed: granted and own within known,
// known within the catalogue, a source of an event format for each known
// purpose. The second reading of the same bytes (from the payload memo
// or the string cache) must report the same decisions as the first.
func FuzzExtract(f *testing.F) {
	for _, s := range append(decidingSeeds, otherSeeds...) {
		f.Add([]byte(s))
	}
	cfg := testConfig()
	cfg.Defaults() // the field paths, as New completes them
	cat := compile(cfg)
	// Control: every format's seed yields decisions, or the target would
	// fuzz an extractor that reads nothing.
	for _, s := range decidingSeeds {
		x := extractor{cat: cat, cache: newStringCache(16)}
		var e eventConsent
		if x.extract([]byte(s), 1, &e); e.known == 0 {
			f.Fatalf("seed %s: no decision", s)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		x := extractor{cat: cat, cache: newStringCache(16)}
		var a, b eventConsent
		const ts = 1_700_000_000_000_000
		okA := x.extract(raw, ts, &a)
		if a.granted&^a.known != 0 || a.own&^a.known != 0 || a.known&^cat.all != 0 {
			t.Fatalf("known %b granted %b own %b (catalogue %b)", a.known, a.granted, a.own, cat.all)
		}
		for m := a.known; m != 0; m &= m - 1 {
			if src := a.src[tz(m)]; src == SourceNone || src == SourceAPI || src == SourceMerge || src >= numSources {
				t.Fatalf("purpose bit %d: source %v", tz(m), src)
			}
		}
		okB := x.extract(bytes.Clone(raw), ts, &b)
		if okA != okB || a.known != b.known || a.granted != b.granted {
			t.Fatalf("second reading differs: ok %v/%v known %b/%b granted %b/%b", okA, okB, a.known, b.known, a.granted, b.granted)
		}
		for m := a.known; m != 0; m &= m - 1 {
			i := tz(m)
			if a.src[i] != b.src[i] || a.effTime(i, ts) != b.effTime(i, ts) {
				t.Fatalf("purpose bit %d: source %v/%v time %d/%d on the second reading", i, a.src[i], b.src[i], a.effTime(i, ts), b.effTime(i, ts))
			}
		}
	})
}

// effTime is the time a known purpose's decision takes: its own, or the
// event's.
func (e *eventConsent) effTime(i int, ts int64) int64 {
	if e.own>>i&1 == 1 {
		return e.ts[i]
	}
	return ts
}

// FuzzRudderStack feeds arbitrary events to a sink's RudderStack
// destination block. It must not panic; an event that names no denied
// consent id (and escapes none of its keys) is always kept (RudderStack
// filters nothing then); and the
// decision from the memo equals the decision from parsing.
func FuzzRudderStack(f *testing.F) {
	for i, s := range append(decidingSeeds, otherSeeds...) {
		f.Add([]byte(s), uint8(i))
	}
	db := openDB(f, "")
	defer db.Close()
	c, err := New(testConfig(), db, nil)
	if err != nil {
		f.Fatal(err)
	}
	blocks := []RudderStackConfig{
		{Provider: "oneTrust", Consents: []string{"C0002", "C0004"}},
		{Provider: "ketch", Consents: []string{"analytics", "targeted_advertising"}},
		{Provider: "custom", ResolutionStrategy: "or", Consents: []string{"C0002", "analytics"}},
	}
	var pols []*Policy
	for i := range blocks {
		p, err := NewPolicy(PolicyConfig{Name: "rs" + string(rune('a'+i)), RudderStack: &blocks[i]}, c)
		if err != nil {
			f.Fatal(err)
		}
		pols = append(pols, p)
	}
	f.Fuzz(func(t *testing.T, raw []byte, which uint8) {
		p := pols[int(which)%len(pols)]
		keep := p.rudderKeep(raw)
		if !keep && !bytes.Contains(raw, []byte("deniedConsentIds")) && !bytes.Contains(raw, []byte(`\`)) {
			t.Fatalf("dropped an event that denies nothing: %q", raw)
		}
		if again := p.rudderKeep(bytes.Clone(raw)); again != keep {
			t.Fatalf("second reading: keep %v, first %v", again, keep)
		}
	})
}
