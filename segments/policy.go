package segments

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/valyala/fastjson"
)

// Drop reasons a Policy reports (engine counts them as
// cdp_engine_dropped_total{sink,reason}).
const (
	ReasonDenied     engine.Reason = "consent_denied"
	ReasonUnknown    engine.Reason = "consent_unknown"
	ReasonSuppressed engine.Reason = "suppressed"
	// ReasonErased: the row's profile was erased (Consent.Erase) after
	// identity resolved the row; its events still in flight never reach a
	// sink with a policy.
	ReasonErased engine.Reason = "erased"
	// ReasonRudderStack: the RudderStack destination block filtered the
	// event (its consentManagement denied the sink's consents).
	ReasonRudderStack engine.Reason = "consent_denied_rudderstack"
	// ReasonConsentRecord: the row is a consent record from the input
	// topic (type "consent"), which updates state and is not forwarded.
	ReasonConsentRecord engine.Reason = "consent_record"
)

// PolicyConfig is the consent block of one sink. Nothing is implicit:
// with purposes set, require, unknown and decide_by are required.
type PolicyConfig struct {
	// Name is the sink's name, set by the caller (not read from YAML); the
	// explain endpoint finds policies by it.
	Name string `yaml:"-"`
	// Purposes the sink needs, by catalogue name.
	Purposes []string `yaml:"purposes"`
	// Require: "all" (every purpose granted) or "any" (at least one).
	Require string `yaml:"require"`
	// Unknown: what a purpose without a decision means for this sink:
	// "allow", "deny", or "purpose_default" (the catalogue's default).
	Unknown string `yaml:"unknown"`
	// DecideBy: whose consent decides: "profile" (the person's state after
	// the event), "event" (only what the event itself carries), or
	// "stricter" (both must allow).
	DecideBy string `yaml:"decide_by"`
	// RudderStack is a RudderStack destination consent block, pasted from
	// an existing RudderStack config; when set, it filters too (an event
	// passes only if both it and the purposes allow it).
	RudderStack *RudderStackConfig `yaml:"rudderstack"`
}

// RudderStackConfig is RudderStack's per-destination consent setting.
type RudderStackConfig struct {
	// Provider: "oneTrust", "ketch" or "custom" (case-sensitive).
	Provider string `yaml:"provider"`
	// ResolutionStrategy: "and" or "or"; used for provider custom (the
	// event's strategy applies for the others). Required for custom.
	ResolutionStrategy string `yaml:"resolutionStrategy"`
	// Consents are the consent ids this destination needs.
	Consents []string `yaml:"consents"`
}

// Validate reports the first invalid field, relative to the block.
func (p PolicyConfig) Validate() error {
	// No purposes and no rudderstack block is an explicit statement: the
	// sink needs no purpose; it still never receives suppressed people.
	if len(p.Purposes) > 0 {
		if p.Require != "all" && p.Require != "any" {
			return fmt.Errorf("require: %q (want all or any)", p.Require)
		}
		if p.Unknown != "allow" && p.Unknown != "deny" && p.Unknown != "purpose_default" {
			return fmt.Errorf("unknown: %q (want allow, deny or purpose_default)", p.Unknown)
		}
		if p.DecideBy != "event" && p.DecideBy != "profile" && p.DecideBy != "stricter" {
			return fmt.Errorf("decide_by: %q (want event, profile or stricter)", p.DecideBy)
		}
	}
	if r := p.RudderStack; r != nil {
		if r.Provider != "oneTrust" && r.Provider != "ketch" && r.Provider != "custom" {
			return fmt.Errorf("rudderstack.provider: %q (want oneTrust, ketch or custom; case-sensitive)", r.Provider)
		}
		if r.ResolutionStrategy != "" && r.ResolutionStrategy != "and" && r.ResolutionStrategy != "or" {
			return fmt.Errorf("rudderstack.resolutionStrategy: %q (want and or or)", r.ResolutionStrategy)
		}
		if r.Provider == "custom" && r.ResolutionStrategy == "" {
			return errors.New("rudderstack.resolutionStrategy: required for provider custom")
		}
		if len(r.Consents) == 0 {
			return errors.New("rudderstack.consents: at least one consent id")
		}
	}
	return nil
}

// Policy is the engine.Filter of one sink.
type Policy struct {
	c      *Consent
	cfg    PolicyConfig
	req    uint64
	def    uint64 // catalogue defaults of the required purposes
	any    bool
	unk    uint8 // 0 allow, 1 deny, 2 purpose_default
	by     uint8 // 0 profile, 1 event, 2 stricter
	fast   bool  // the consent_mask column alone decides a kept row
	mu     sync.Mutex
	x      extractor // fallback when a batch's annotation is gone
	ev     eventConsent
	rp     fastjson.Parser
	drops  dropRing
	denied [][]byte
	// rmemo holds the RudderStack block's decision by consent cut-out: a
	// person's consentManagement repeats across their events, so most
	// rows skip the parse. Emptied at rmemoMax entries and on erasure.
	rmemo map[string]bool
	cfs   *array.Binary // consent_fields of the batch in Select, may be nil
	// msgs and at are the message ids of the batch in Select and when it
	// started: a drop's explain entry says when its batch was filtered.
	msgs *array.String
	at   time.Time
}

const (
	byProfile uint8 = iota
	byEvent
	byStricter
)

// NewPolicy builds the filter of one sink over c and registers it under
// cfg.Name for the explain endpoint.
func NewPolicy(cfg PolicyConfig, c *Consent) (*Policy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Policy{c: c, cfg: cfg, any: cfg.Require == "any"}
	for _, name := range cfg.Purposes {
		bit, ok := c.cat.bitOf(name)
		if !ok {
			return nil, fmt.Errorf("purposes: %q is not in the purpose catalogue", name)
		}
		p.req |= 1 << bit
	}
	p.def = c.cat.defGranted & p.req
	switch cfg.Unknown {
	case "deny":
		p.unk = 1
	case "purpose_default":
		p.unk = 2
	}
	switch cfg.DecideBy {
	case "event":
		p.by = byEvent
	case "stricter":
		p.by = byStricter
	}
	p.fast = p.by == byProfile && p.unk == 2
	p.x = extractor{cat: c.cat, cache: newStringCache(256)}
	p.drops.init(4096)
	c.pmu.Lock()
	c.policies[cfg.Name] = p
	c.pmu.Unlock()
	return p, nil
}

var _ engine.Filter = (*Policy)(nil)

// Select implements engine.Filter. It reads the consent_mask and
// profile_id columns and the batch's annotation from Process (each row's
// event consent and which purposes the profile had decided); for a batch
// whose annotation is gone it falls back to the bitmaps (profile) and to
// parsing the raw event (event). Suppressed and erased profiles never
// pass, whatever the policy requires.
func (p *Policy) Select(b *engine.Batch, dst []int, drop func(row int, r engine.Reason)) []int {
	n := b.Rows()
	if n == 0 {
		return dst
	}
	rec := b.Rec
	pids := rec.Column(engine.ColProfileID).(*array.Uint32)
	masks := rec.Column(engine.ColConsentMask).(*array.Uint64)
	pidv, maskv := pids.Uint32Values(), masks.Uint64Values()
	typv := rec.Column(engine.ColType).(*array.Uint8).Uint8Values()
	var raws *array.Binary
	if p.cfg.RudderStack != nil || p.by != byProfile {
		raws = rec.Column(engine.ColRaw).(*array.Binary)
	}
	c := p.c
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cfs, _ = rec.Column(engine.ColConsentFields).(*array.Binary)
	p.msgs, p.at = rec.Column(engine.ColMessageID).(*array.String), time.Now()
	defer func() { p.cfs, p.msgs = nil, nil }()
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.ann.mu.RLock()
	defer c.ann.mu.RUnlock()
	a := c.ann.find(b)
	supp := !c.suppressed.IsEmpty()
	er := !c.erased.IsEmpty()
	for i := 0; i < n; i++ {
		pid := pidv[i]
		if engine.EventType(typv[i]) == engine.TypeConsent {
			// A consent record on the input topic updates state; it is
			// not an event to forward.
			if drop != nil {
				drop(i, ReasonConsentRecord)
			}
			continue
		}
		if er && pid != 0 && c.erased.Contains(pid) {
			// Resolved before the erasure, still in flight. The explain
			// ring keeps the message id and reason, not the erased id.
			p.dropRow(i, 0, ReasonErased, drop)
			continue
		}
		if supp && pid != 0 && c.suppressed.Contains(pid) {
			p.dropRow(i, pid, ReasonSuppressed, drop)
			continue
		}
		if p.req != 0 {
			mask := maskv[i]
			if !(p.fast && p.pass(mask, ^uint64(0))) {
				if r := p.evalRow(i, pid, mask, a, raws); r != "" {
					p.dropRow(i, pid, r, drop)
					continue
				}
			}
		}
		if p.cfg.RudderStack != nil && !p.rudderKeepRow(raws, i) {
			p.dropRow(i, pid, ReasonRudderStack, drop)
			continue
		}
		dst = append(dst, i)
	}
	return dst
}

// pass applies require to granted bits g (unknown already resolved).
func (p *Policy) pass(g, _ uint64) bool {
	if p.any {
		return g&p.req != 0
	}
	return g&p.req == p.req
}

// decide is the policy on one view: g granted, k known (g ⊆ k). It
// returns "" to keep.
func (p *Policy) decide(g, k uint64) engine.Reason {
	u := p.req &^ k
	switch p.unk {
	case 0:
		g |= u
	case 2:
		g |= u & p.def
	}
	if p.pass(g, k) {
		return ""
	}
	if k&^g&p.req != 0 {
		return ReasonDenied
	}
	return ReasonUnknown
}

func (p *Policy) evalRow(i int, pid uint32, mask uint64, a *annotation, raws *array.Binary) engine.Reason {
	if p.by != byEvent {
		var k uint64
		if a != nil {
			k = a.pk[i]
		} else if pid != 0 {
			for bb := p.req; bb != 0; bb &= bb - 1 {
				bit := tz(bb)
				if p.c.granted[bit].Contains(pid) || p.c.denied[bit].Contains(pid) {
					k |= 1 << bit
				}
			}
		}
		if r := p.decide(mask&k, k); r != "" || p.by == byProfile {
			return r
		}
	}
	var ek, eg uint64
	if a != nil {
		ek, eg = a.ek[i], a.eg[i]
	} else {
		p.x.extractRow(p.cfs, raws, i, 0, &p.ev)
		ek, eg = p.ev.known, p.ev.granted
	}
	return p.decide(eg, ek)
}

// rmemoMax and rmemoMaxBytes bound Policy.rmemo: at most 4096 cut-outs of
// at most 1 KiB each (4 MiB). Larger cut-outs (long TCF or GPP strings
// beside the consentManagement object) are parsed every time.
const (
	rmemoMax      = 4096
	rmemoMaxBytes = 1024
)

// rudderKeepRow applies the RudderStack destination block to row i, from
// the memo when its consent cut-out was decided before. Rows without a
// cut-out (a batch decoded without consent paths) are parsed every time:
// the whole raw event is unique to it.
func (p *Policy) rudderKeepRow(raws *array.Binary, i int) bool {
	if p.cfs == nil || !p.cfs.IsValid(i) {
		return p.rudderKeep(raws.Value(i))
	}
	src := p.cfs.Value(i)
	if len(src) > rmemoMaxBytes {
		return p.rudderKeep(src)
	}
	if keep, ok := p.rmemo[string(src)]; ok {
		return keep
	}
	keep := p.rudderKeep(src)
	if p.rmemo == nil || len(p.rmemo) >= rmemoMax {
		p.rmemo = make(map[string]bool, 256)
	}
	p.rmemo[string(src)] = keep
	return keep
}

// rudderKeep applies the RudderStack destination block to one raw event.
func (p *Policy) rudderKeep(raw []byte) bool {
	r := p.cfg.RudderStack
	v, err := p.rp.ParseBytes(raw)
	if err != nil {
		return true // not JSON: nothing to filter on (the decoder rejects these earlier)
	}
	cm := getObject(v, p.c.cat.pRudder)
	if cm == nil {
		return true
	}
	p.denied = p.denied[:0]
	visitIDs(cm.Get("deniedConsentIds"), func(id []byte) { p.denied = append(p.denied, id) })
	return RudderStackKeep(r.Provider, r.ResolutionStrategy, r.Consents,
		string(cm.GetStringBytes("provider")), string(cm.GetStringBytes("resolutionStrategy")), p.denied)
}

// RudderStackKeep reports whether RudderStack would send an event to a
// destination, following its processor's consent filter: a destination
// configured for provider with consents, and an event whose
// context.consentManagement names evProvider, evStrategy and denied ids.
//
//   - no denied ids: kept;
//   - the event names a provider (case-sensitive) other than the
//     destination's: kept (the destination has no setting for it);
//   - strategy: for custom the destination's, otherwise the event's; an
//     event without one (legacy SDKs) gets OneTrust's "and" and Ketch's
//     "or";
//   - "and": dropped if any configured consent is denied; "or": dropped
//     only if every configured consent is denied.
func RudderStackKeep(provider, sinkStrategy string, consents []string, evProvider, evStrategy string, denied [][]byte) bool {
	if len(denied) == 0 || len(consents) == 0 {
		return true
	}
	if evProvider != "" && evProvider != provider {
		return true
	}
	strategy := evStrategy
	switch {
	case provider == "custom":
		strategy = sinkStrategy
	case strategy == "" && provider == "ketch":
		strategy = "or"
	case strategy == "":
		strategy = "and"
	}
	isDenied := func(id string) bool {
		return slices.ContainsFunc(denied, func(d []byte) bool { return string(d) == id })
	}
	if strategy == "or" {
		for _, id := range consents {
			if !isDenied(id) {
				return true
			}
		}
		return false
	}
	for _, id := range consents {
		if isDenied(id) {
			return false
		}
	}
	return true
}

// dropRow reports row i of the batch in Select dropped and keeps it for
// explain; the caller holds p.mu.
func (p *Policy) dropRow(i int, pid uint32, r engine.Reason, drop func(int, engine.Reason)) {
	if drop != nil {
		drop(i, r)
	}
	p.drops.add(p.msgs.Value(i), pid, r, p.at)
}

// dropRing keeps the last drops of a policy for the explain endpoint.
type dropRing struct {
	e    []dropEntry
	next int
}

type dropEntry struct {
	msg    []byte
	pid    uint32
	reason engine.Reason
	at     time.Time
}

func (r *dropRing) init(n int) { r.e = make([]dropEntry, n) }

func (r *dropRing) add(msg string, pid uint32, reason engine.Reason, at time.Time) {
	e := &r.e[r.next]
	r.next = (r.next + 1) % len(r.e)
	e.msg = append(e.msg[:0], msg...)
	e.pid, e.reason, e.at = pid, reason, at
}

func (r *dropRing) find(msg string) (dropEntry, bool) {
	for i := range r.e {
		j := (r.next - 1 - i + 2*len(r.e)) % len(r.e)
		if e := r.e[j]; e.reason != "" && string(e.msg) == msg {
			return e, true
		}
	}
	return dropEntry{}, false
}
