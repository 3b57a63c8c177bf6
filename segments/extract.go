package segments

import (
	"bytes"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/segments/iab"
	"github.com/valyala/fastjson"
)

// Source says where a consent decision came from.
type Source uint8

// Sources of decisions, stored in Pebble (append only: never renumber).
const (
	SourceNone Source = iota
	SourceAPI
	SourceSegment
	SourceRudderStack
	SourceMParticle
	SourceTCF
	SourceGPP
	SourceUSP
	SourceGPC
	SourceMerge
	numSources
)

var sourceNames = [...]string{"none", "api", "segment", "rudderstack", "mparticle", "tcf", "gpp", "usp", "gpc", "merge"}

func (s Source) String() string {
	if s < numSources {
		return sourceNames[s]
	}
	return "unknown"
}

// ParseSource maps a source name to its Source (SourceNone if unknown).
func ParseSource(s string) Source {
	for i, n := range sourceNames {
		if n == s {
			return Source(i)
		}
	}
	return SourceNone
}

// US opt-out signals, as bits.
const (
	sigSale uint8 = 1 << iota
	sigSharing
	sigTargeted
)

// catalogue is the compiled purpose catalogue.
type catalogue struct {
	purposes   []Purpose
	byBit      [MaxPurposes]int // index into purposes, -1 if unused
	all        uint64           // bits in use
	defGranted uint64           // bits whose default is granted
	ttl        [MaxPurposes]int64
	tcf        [MaxPurposes]uint32 // mapped TCF purposes, bit p-1
	tcfLI      uint64
	us         [MaxPurposes]uint8
	// external id → purpose bits, per format
	segment, oneTrust, ketch, custom, mparticle map[string]uint64
	// segmentAll: bits of purposes with Segment mappings (a present
	// categoryPreferences object decides all of them).
	segmentAll uint64
	// paths
	pTCF, pGPP, pUSP, pGPC, pSegment, pRudder, pMParticle []string
	needles                                               [][]byte
}

func compile(cfg Config) *catalogue {
	c := &catalogue{purposes: cfg.Purposes,
		segment: map[string]uint64{}, oneTrust: map[string]uint64{}, ketch: map[string]uint64{},
		custom: map[string]uint64{}, mparticle: map[string]uint64{}}
	for i := range c.byBit {
		c.byBit[i] = -1
	}
	for i, p := range cfg.Purposes {
		bit := uint64(1) << p.Bit
		c.byBit[p.Bit] = i
		c.all |= bit
		if p.Default == "granted" {
			c.defGranted |= bit
		}
		c.ttl[p.Bit] = p.GrantTTL.Microseconds()
		for _, t := range p.TCF {
			c.tcf[p.Bit] |= 1 << (t - 1)
		}
		if p.TCFLegitimateInterest {
			c.tcfLI |= bit
		}
		for _, s := range p.USOptOut {
			c.us[p.Bit] |= usSignals[s]
		}
		for m, ids := range map[*map[string]uint64][]string{&c.segment: p.Segment, &c.oneTrust: p.OneTrust, &c.ketch: p.Ketch, &c.custom: p.Custom, &c.mparticle: p.MParticle} {
			for _, id := range ids {
				(*m)[id] |= bit
			}
		}
		if len(p.Segment) > 0 {
			c.segmentAll |= bit
		}
	}
	f := cfg.Fields
	c.pTCF, c.pGPP, c.pUSP, c.pGPC = path(f.TCF), path(f.GPP), path(f.USP), path(f.GPC)
	c.pSegment, c.pRudder, c.pMParticle = path(f.Segment), path(f.RudderStack), path(f.MParticle)
	// Prefilter needles: per path its first key below "context", as `"key`
	// (no closing quote), dropping needles another one is a prefix of: the
	// default paths give just `"consent` and `"gpc`.
	var keys []string
	for _, p := range [][]string{c.pTCF, c.pGPP, c.pUSP, c.pGPC, c.pSegment, c.pRudder, c.pMParticle} {
		if len(p) == 0 {
			continue
		}
		k := p[len(p)-1]
		for _, seg := range p {
			if seg != "context" {
				k = seg
				break
			}
		}
		keys = append(keys, `"`+k)
	}
	for i, k := range keys {
		covered := false
		for j, o := range keys {
			if j != i && strings.HasPrefix(k, o) && (len(o) < len(k) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			c.needles = append(c.needles, []byte(k))
		}
	}
	return c
}

func (c *catalogue) purposeName(bit int) string {
	if i := c.byBit[bit]; i >= 0 {
		return c.purposes[i].Name
	}
	return ""
}

func (c *catalogue) bitOf(name string) (int, bool) {
	for _, p := range c.purposes {
		if p.Name == name {
			return p.Bit, true
		}
	}
	return 0, false
}

// eventConsent is the consent one event carries, per purpose bit: known
// bits have a decision, granted ⊆ known. src and ts are valid for known
// bits only; ts is 0 when the event's timestamp applies, and own has the
// known bits whose ts is not 0.
type eventConsent struct {
	known, granted, own uint64
	src                 [MaxPurposes]Source
	ts                  [MaxPurposes]int64
}

func (e *eventConsent) reset() { e.known, e.granted, e.own = 0, 0, 0 }

// set records one decision of the event. Within one event a denial beats
// a grant from another format (the most restrictive reading of one
// message), and the first source to decide is kept otherwise.
func (e *eventConsent) set(bits uint64, granted bool, src Source, ts int64) {
	for b := bits; b != 0; b &= b - 1 {
		i := tz(b)
		m := uint64(1) << i
		switch {
		case e.known&m == 0:
			e.known |= m
			if granted {
				e.granted |= m
			}
			e.setSource(i, src, ts)
		case !granted && e.granted&m != 0:
			e.granted &^= m
			e.setSource(i, src, ts)
		}
	}
}

func (e *eventConsent) setSource(i int, src Source, ts int64) {
	e.src[i], e.ts[i] = src, ts
	if ts != 0 {
		e.own |= 1 << i
	} else {
		e.own &^= 1 << i
	}
}

// signals is what a TCF/GPP/USP string says, cached per string.
type signals struct {
	ok                bool // decoded; false caches a rejection
	tcf               bool
	tcfConsent, tcfLI uint32
	usOut, usNotOut   uint8 // US signals opted out / explicitly not opted out
}

// stringCache is a bounded two-generation cache of decoded strings: when
// the current generation is full it becomes the previous one and the
// oldest is dropped, so hot strings survive and memory stays bounded.
type stringCache struct {
	max        int
	cur, prev  map[string]signals
	hits, miss uint64
}

func newStringCache(max int) *stringCache {
	return &stringCache{max: max, cur: map[string]signals{}, prev: map[string]signals{}}
}

func (c *stringCache) get(k []byte) (signals, bool) {
	if c == nil || c.max == 0 {
		return signals{}, false
	}
	if s, ok := c.cur[string(k)]; ok {
		c.hits++
		return s, true
	}
	if s, ok := c.prev[string(k)]; ok {
		c.hits++
		c.put(k, s)
		return s, true
	}
	c.miss++
	return signals{}, false
}

func (c *stringCache) put(k []byte, s signals) {
	if c == nil || c.max == 0 {
		return
	}
	if len(c.cur) >= (c.max+1)/2 {
		c.prev, c.cur = c.cur, make(map[string]signals, len(c.cur))
	}
	c.cur[string(k)] = s
}

// extractor reads the consent of one event. It is not safe for concurrent
// use: each goroutine has its own (the stage one, every fallback another).
type extractor struct {
	cat    *catalogue
	p      fastjson.Parser
	cache  *stringCache
	keyBuf []byte
	errs   [4]uint64 // decode errors by format: tcf, gpp, usp, other
	// memo maps small consent payloads (the decoder's consent_fields
	// cut-outs) to what they decode to: people send the same few
	// preference objects over and over, so most events skip the parse.
	memo map[string]memoConsent
}

// memoConsent is an eventConsent without own times (only those are
// memoised), a tenth of its size: a hit copies the known bits' sources.
type memoConsent struct {
	known, granted uint64
	src            [MaxPurposes]Source
}

// memoMax bounds the payload memo (entries of about 100 bytes plus the
// payload); memoLen is the largest payload memoised (cut-outs are small;
// whole events are unique, so memoising them would only churn).
const (
	memoMax = 4096
	memoLen = 512
)

const (
	errTCF = iota
	errGPP
	errUSP
	errJSON
)

// hasConsent is a cheap prefilter: false when raw cannot hold any
// configured consent field, so the event is not parsed.
func (x *extractor) hasConsent(raw []byte) bool {
	for _, n := range x.cat.needles {
		if bytes.Contains(raw, n) {
			return true
		}
	}
	return false
}

// extract fills e from raw; ts is the event time (unix µs). It returns
// false when raw is not a JSON object.
func (x *extractor) extract(raw []byte, ts int64, e *eventConsent) bool {
	e.reset()
	if !x.hasConsent(raw) {
		return true
	}
	return x.read(raw, ts, e)
}

// extractRow fills e from row i of a batch: from the decoder's
// consent_fields cut-out (cfs) when the row has one, else from the raw
// event. A cut-out holds only configured consent fields, so any but the
// empty object "{}" has some to read: the prefilter would only find them.
func (x *extractor) extractRow(cfs, raws *array.Binary, i int, ts int64, e *eventConsent) {
	if cfs == nil || !cfs.IsValid(i) {
		x.extract(raws.Value(i), ts, e)
		return
	}
	e.reset()
	if cut := cfs.Value(i); len(cut) > len("{}") {
		x.read(cut, ts, e)
	}
}

// read is extract after the prefilter; e is reset.
func (x *extractor) read(raw []byte, ts int64, e *eventConsent) bool {
	if m, ok := x.memo[string(raw)]; ok {
		e.known, e.granted = m.known, m.granted
		for b := m.known; b != 0; b &= b - 1 {
			i := tz(b)
			e.src[i], e.ts[i] = m.src[i], 0
		}
		return true
	}
	v, err := x.p.ParseBytes(raw)
	if err != nil || v.Type() != fastjson.TypeObject {
		x.errs[errJSON]++
		return false
	}
	x.extractValue(v, ts, e)
	if len(raw) <= memoLen && e.own == 0 {
		// Payloads whose decisions carry their own times (mParticle)
		// are not memoised: the times would be replayed on later events.
		if x.memo == nil || len(x.memo) >= memoMax {
			x.memo = make(map[string]memoConsent, 256)
		}
		x.memo[string(raw)] = memoConsent{known: e.known, granted: e.granted, src: e.src}
	}
	return true
}

func (x *extractor) extractValue(v *fastjson.Value, ts int64, e *eventConsent) {
	c := x.cat
	if o := getObject(v, c.pSegment); o != nil && c.segmentAll != 0 {
		granted := c.segmentAll
		present := uint64(0)
		o.GetObject().Visit(func(k []byte, val *fastjson.Value) {
			if bits, ok := c.segment[string(k)]; ok && val.Type() == fastjson.TypeTrue {
				present |= bits
			}
		})
		// A purpose is granted iff every one of its keys is true.
		for b := granted; b != 0; b &= b - 1 {
			i := tz(b)
			for _, k := range c.purposes[c.byBit[i]].Segment {
				if val := o.Get(k); val == nil || val.Type() != fastjson.TypeTrue {
					granted &^= 1 << i
					break
				}
			}
		}
		e.set(granted, true, SourceSegment, 0)
		e.set(c.segmentAll&^granted, false, SourceSegment, 0)
	}
	if o := getObject(v, c.pRudder); o != nil {
		var ids map[string]uint64
		provider := 0
		switch string(o.GetStringBytes("provider")) {
		case "oneTrust":
			ids, provider = c.oneTrust, 1
		case "ketch":
			ids, provider = c.ketch, 2
		case "custom":
			ids, provider = c.custom, 3
		}
		if ids != nil {
			var denied, allowed uint64
			visitIDs(o.Get("deniedConsentIds"), func(id []byte) { denied |= ids[string(id)] })
			visitIDs(o.Get("allowedConsentIds"), func(id []byte) { allowed |= ids[string(id)] })
			// granted: every mapped id of the purpose allowed, none denied.
			for b := allowed &^ denied; b != 0; b &= b - 1 {
				i := tz(b)
				p := &c.purposes[c.byBit[i]]
				list := p.OneTrust
				if provider == 2 {
					list = p.Ketch
				} else if provider == 3 {
					list = p.Custom
				}
				all := true
				for _, id := range list {
					if !containsID(o.Get("allowedConsentIds"), id) {
						all = false
						break
					}
				}
				if !all {
					allowed &^= 1 << i
				}
			}
			e.set(denied, false, SourceRudderStack, 0)
			e.set(allowed&^denied, true, SourceRudderStack, 0)
		}
	}
	if o := getObject(v, c.pMParticle); o != nil {
		if g := o.Get("gdpr"); g != nil && g.Type() == fastjson.TypeObject {
			g.GetObject().Visit(func(k []byte, pv *fastjson.Value) {
				bits := c.mparticle[string(k)]
				if bits == 0 {
					return
				}
				cv := pv.Get("consented")
				if cv == nil {
					return
				}
				t := int64(0)
				if ms := pv.GetInt64("timestamp_unixtime_ms"); ms > 0 {
					t = ms * 1000
				}
				e.set(bits, cv.Type() == fastjson.TypeTrue, SourceMParticle, t)
			})
		}
		if cv := o.Get("ccpa", "data_sale_opt_out", "consented"); cv != nil {
			// mParticle CCPA: consented=true means the person opted out.
			x.applyUS(e, sigSale, cv.Type() == fastjson.TypeTrue, SourceMParticle)
		}
	}
	if s := getString(v, c.pTCF); len(s) > 0 {
		sig := x.decode(s, errTCF)
		if sig.ok && sig.tcf {
			x.applyTCF(e, sig, SourceTCF)
		}
	}
	if s := getString(v, c.pGPP); len(s) > 0 {
		sig := x.decode(s, errGPP)
		if sig.ok {
			if sig.tcf {
				x.applyTCF(e, sig, SourceGPP)
			}
			x.applySignals(e, sig, SourceGPP)
		}
	}
	if s := getString(v, c.pUSP); len(s) > 0 {
		u, err := iab.DecodeUSP(string(s))
		if err != nil {
			x.errs[errUSP]++
		} else if u.OptOutOfSale != iab.TriNA {
			x.applyUS(e, sigSale, u.OptOutOfSale == iab.TriYes, SourceUSP)
		}
	}
	if len(c.pGPC) > 0 {
		if g := v.Get(c.pGPC...); g != nil && g.Type() == fastjson.TypeTrue {
			// GPC is an opt-out of sale and sharing; its absence or false
			// says nothing.
			x.applyUS(e, sigSale|sigSharing, true, SourceGPC)
		}
	}
}

func (x *extractor) applyTCF(e *eventConsent, sig signals, src Source) {
	c := x.cat
	for b := c.all; b != 0; b &= b - 1 {
		i := tz(b)
		need := c.tcf[i]
		if need == 0 {
			continue
		}
		have := sig.tcfConsent
		if c.tcfLI>>i&1 == 1 {
			have |= sig.tcfLI
		}
		e.set(1<<i, have&need == need, src, 0)
	}
}

func (x *extractor) applySignals(e *eventConsent, sig signals, src Source) {
	for _, s := range []uint8{sigSale, sigSharing, sigTargeted} {
		if sig.usOut&s != 0 {
			x.applyUS(e, s, true, src)
		} else if sig.usNotOut&s != 0 {
			x.applyUS(e, s, false, src)
		}
	}
}

// applyUS records a US opt-out signal: every purpose mapped to it is
// denied when optedOut, granted otherwise.
func (x *extractor) applyUS(e *eventConsent, sig uint8, optedOut bool, src Source) {
	c := x.cat
	for b := c.all; b != 0; b &= b - 1 {
		i := tz(b)
		if c.us[i]&sig != 0 {
			e.set(1<<i, !optedOut, src, 0)
		}
	}
}

// decode returns the signals of a TCF (kind errTCF) or GPP string, from
// the cache when it was seen recently.
func (x *extractor) decode(s []byte, kind int) signals {
	key := s
	if kind == errGPP {
		// GPP and TCF strings never collide: GPP headers start with 'D'
		// and TC strings with 'C', but keep the kinds apart anyway.
		key = append(x.keyBuf[:0], 'g')
		key = append(key, s...)
		x.keyBuf = key
	}
	if sig, ok := x.cache.get(key); ok {
		if !sig.ok {
			x.errs[kind]++
		}
		return sig
	}
	var sig signals
	if kind == errTCF {
		t, err := iab.DecodeTCF(string(s), iab.TCFOptions{})
		if err == nil {
			sig = signals{ok: true, tcf: true, tcfConsent: t.PurposeConsents, tcfLI: t.PurposeLI}
		}
	} else if g, err := iab.DecodeGPP(string(s)); err == nil {
		sig.ok = true
		for _, sec := range g.Sections {
			switch {
			case sec.TCF != nil:
				sig.tcf, sig.tcfConsent, sig.tcfLI = true, sec.TCF.PurposeConsents, sec.TCF.PurposeLI
			case sec.USP != nil:
				usSig(&sig, sigSale, sec.USP.OptOutOfSale == iab.TriYes, sec.USP.OptOutOfSale == iab.TriNo)
			case sec.US != nil:
				u := sec.US
				usSig(&sig, sigSale, u.SaleOptOut == iab.OptedOut, u.SaleOptOut == iab.DidNotOptOut)
				usSig(&sig, sigSharing, u.SharingOptOut == iab.OptedOut, u.SharingOptOut == iab.DidNotOptOut)
				usSig(&sig, sigTargeted, u.TargetedAdvertisingOptOut == iab.OptedOut, u.TargetedAdvertisingOptOut == iab.DidNotOptOut)
				if u.GPC {
					usSig(&sig, sigSale|sigSharing, true, false)
				}
			}
		}
	}
	if !sig.ok {
		x.errs[kind]++
	}
	x.cache.put(key, sig)
	return sig
}

// usSig merges one section's signal: an opt-out anywhere wins.
func usSig(s *signals, sig uint8, out, notOut bool) {
	if out {
		s.usOut |= sig
		s.usNotOut &^= sig
	} else if notOut && s.usOut&sig == 0 {
		s.usNotOut |= sig
	}
}

// getObject returns the value at p if it is an object, else nil.
func getObject(v *fastjson.Value, p []string) *fastjson.Value {
	if len(p) == 0 {
		return nil
	}
	o := v.Get(p...)
	if o == nil || o.Type() != fastjson.TypeObject {
		return nil
	}
	return o
}

func getString(v *fastjson.Value, p []string) []byte {
	if len(p) == 0 {
		return nil
	}
	s := v.Get(p...)
	if s == nil || s.Type() != fastjson.TypeString {
		return nil
	}
	b, _ := s.StringBytes()
	return b
}

// visitIDs calls fn for each id of a RudderStack consent id list: an array
// of strings, or (some SDKs) an object whose keys are the ids.
func visitIDs(v *fastjson.Value, fn func(id []byte)) {
	if v == nil {
		return
	}
	switch v.Type() {
	case fastjson.TypeArray:
		a, _ := v.Array()
		for _, it := range a {
			if b, err := it.StringBytes(); err == nil {
				fn(b)
			}
		}
	case fastjson.TypeObject:
		o, _ := v.Object()
		o.Visit(func(k []byte, _ *fastjson.Value) { fn(k) })
	}
}

func containsID(v *fastjson.Value, id string) bool {
	found := false
	visitIDs(v, func(b []byte) {
		if string(b) == id {
			found = true
		}
	})
	return found
}
