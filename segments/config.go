package segments

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxPurposes is the size of the purpose catalogue: a purpose is a bit of
// the uint64 consent_mask column.
const MaxPurposes = 64

// Config is the consent block of the configuration file.
type Config struct {
	// Purposes is the purpose catalogue, at most 64 entries. Required.
	Purposes []Purpose `yaml:"purposes"`
	// Fields says where each consent format sits in an event (dotted JSON
	// paths). Defaults are the Segment / RudderStack / mParticle places.
	Fields Fields `yaml:"fields"`
	// Merge decides, per purpose, what a profile merge keeps when both
	// profiles hold a decision: "latest" (default: the later timestamp;
	// a tie keeps the denial) or "most_restrictive" (a denial beats a
	// grant whatever their times).
	Merge string `yaml:"merge"`
	// CacheEntries bounds the cache of decoded TCF/GPP strings (one string
	// repeats across a person's events). Default 65536; about 150 bytes
	// per entry plus the string.
	CacheEntries int `yaml:"cache_entries"`
	// StampGranularity bounds how often a repeated decision is written:
	// a decision equal to the one held but later (the person's
	// preferences sent again with every event) moves the held timestamp
	// in memory at once, and is written only when the profile was last
	// written at least this long ago (by the stage's clock). After a
	// crash the held timestamps are those written, up to this much
	// processing time behind, so a late event older than a lost repeat
	// could then win. Default 1m; below 1s every repeat is written.
	StampGranularity time.Duration `yaml:"stamp_granularity"`
}

// Fields are the dotted JSON paths of the consent formats in an event.
// An empty path (after Defaults, set it to "-") disables that format.
type Fields struct {
	TCF         string `yaml:"tcf"`         // default context.consent.tcString
	GPP         string `yaml:"gpp"`         // default context.consent.gppString
	USP         string `yaml:"usp"`         // default context.consent.usPrivacy
	GPC         string `yaml:"gpc"`         // default context.gpc (true = opt out of sale and sharing)
	Segment     string `yaml:"segment"`     // default context.consent.categoryPreferences
	RudderStack string `yaml:"rudderstack"` // default context.consentManagement
	MParticle   string `yaml:"mparticle"`   // default consent_state
}

// Purpose is one entry of the catalogue and the external ids that map to it.
type Purpose struct {
	// Name is the purpose's id in APIs, metrics and policies
	// ([a-z0-9_]+, unique). Required.
	Name string `yaml:"name"`
	// Bit is the purpose's bit in the consent mask, 0-63, unique. Required
	// (0 is a valid bit, so give every purpose its bit explicitly).
	Bit int `yaml:"bit"`
	// Default is what the consent mask holds when nothing is known:
	// "granted" or "denied". Required: nothing is implicit.
	Default string `yaml:"default"`
	// GrantTTL makes a grant learnt from an event lapse after this long
	// (the API can set an explicit expires_at instead). 0 = never.
	GrantTTL time.Duration `yaml:"grant_ttl"`
	// Segment lists Segment categoryPreferences keys. When the object is
	// present, the purpose is granted iff every listed key is true (a
	// missing key counts as denied).
	Segment []string `yaml:"segment"`
	// OneTrust, Ketch and Custom list RudderStack consentManagement ids
	// for providers oneTrust, ketch and custom (case-sensitive). A denied
	// id denies the purpose; all ids allowed grants it.
	OneTrust []string `yaml:"onetrust"`
	Ketch    []string `yaml:"ketch"`
	Custom   []string `yaml:"custom"`
	// MParticle lists mParticle consent_state.gdpr purpose names.
	MParticle []string `yaml:"mparticle"`
	// TCF lists IAB TCF purposes (1-11): granted iff every listed purpose
	// has consent (or legitimate interest with TCFLegitimateInterest) in
	// the TC string (or a GPP TCF EU section).
	TCF                   []int `yaml:"tcf"`
	TCFLegitimateInterest bool  `yaml:"tcf_legitimate_interest"`
	// USOptOut lists US opt-out signals: "sale", "sharing",
	// "targeted_advertising". Any of them opted out (US Privacy string,
	// GPP US sections, context.gpc, mParticle CCPA data_sale_opt_out)
	// denies the purpose; "did not opt out" grants it.
	USOptOut []string `yaml:"us_opt_out"`
}

// Merge strategies.
const (
	MergeLatest          = "latest"
	MergeMostRestrictive = "most_restrictive"
)

// Defaults fills zero fields with their defaults.
func (c *Config) Defaults() {
	if c.Merge == "" {
		c.Merge = MergeLatest
	}
	if c.CacheEntries == 0 {
		c.CacheEntries = 65536
	}
	if c.StampGranularity == 0 {
		c.StampGranularity = time.Minute
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.Fields.TCF, "context.consent.tcString")
	def(&c.Fields.GPP, "context.consent.gppString")
	def(&c.Fields.USP, "context.consent.usPrivacy")
	def(&c.Fields.GPC, "context.gpc")
	def(&c.Fields.Segment, "context.consent.categoryPreferences")
	def(&c.Fields.RudderStack, "context.consentManagement")
	def(&c.Fields.MParticle, "consent_state")
}

var usSignals = map[string]uint8{"sale": sigSale, "sharing": sigSharing, "targeted_advertising": sigTargeted}

// Validate reports the first invalid field, named by its YAML path
// relative to the consent block ("purposes[3].tcf: ...").
func (c Config) Validate() error {
	if len(c.Purposes) == 0 {
		return errors.New("purposes: at least one purpose is required")
	}
	if len(c.Purposes) > MaxPurposes {
		return fmt.Errorf("purposes: %d purposes, at most %d", len(c.Purposes), MaxPurposes)
	}
	names := map[string]int{}
	bits := map[int]int{}
	for i, p := range c.Purposes {
		at := fmt.Sprintf("purposes[%d].", i)
		if !validName(p.Name) {
			return fmt.Errorf("%sname: %q must match [a-z0-9_]+", at, p.Name)
		}
		if j, ok := names[p.Name]; ok {
			return fmt.Errorf("%sname: %q already used by purposes[%d]", at, p.Name, j)
		}
		names[p.Name] = i
		if p.Bit < 0 || p.Bit >= MaxPurposes {
			return fmt.Errorf("%sbit: %d is not in 0..63", at, p.Bit)
		}
		if j, ok := bits[p.Bit]; ok {
			return fmt.Errorf("%sbit: %d already used by purposes[%d]", at, p.Bit, j)
		}
		bits[p.Bit] = i
		if p.Default != "granted" && p.Default != "denied" {
			return fmt.Errorf("%sdefault: %q (want granted or denied)", at, p.Default)
		}
		if p.GrantTTL < 0 {
			return fmt.Errorf("%sgrant_ttl: must be >= 0", at)
		}
		for _, t := range p.TCF {
			if t < 1 || t > 11 {
				return fmt.Errorf("%stcf: purpose %d is not a TCF v2.2 purpose (1-11)", at, t)
			}
		}
		if p.TCFLegitimateInterest && len(p.TCF) == 0 {
			return fmt.Errorf("%stcf_legitimate_interest: set without tcf purposes", at)
		}
		for _, s := range p.USOptOut {
			if _, ok := usSignals[s]; !ok {
				return fmt.Errorf("%sus_opt_out: unknown signal %q (want sale, sharing, targeted_advertising)", at, s)
			}
		}
		for field, ids := range map[string][]string{"segment": p.Segment, "onetrust": p.OneTrust, "ketch": p.Ketch, "custom": p.Custom, "mparticle": p.MParticle} {
			for _, id := range ids {
				if id == "" {
					return fmt.Errorf("%s%s: empty id", at, field)
				}
			}
		}
	}
	if c.Merge != MergeLatest && c.Merge != MergeMostRestrictive {
		return fmt.Errorf("merge: %q (want latest or most_restrictive)", c.Merge)
	}
	if c.StampGranularity < 0 {
		return errors.New("stamp_granularity: must be >= 0")
	}
	if c.CacheEntries < 0 {
		return errors.New("cache_entries: must be >= 0")
	}
	for name, p := range map[string]string{"tcf": c.Fields.TCF, "gpp": c.Fields.GPP, "usp": c.Fields.USP, "gpc": c.Fields.GPC,
		"segment": c.Fields.Segment, "rudderstack": c.Fields.RudderStack, "mparticle": c.Fields.MParticle} {
		if p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
			return fmt.Errorf("fields.%s: %q is not a dotted JSON path (\"-\" disables)", name, p)
		}
	}
	return nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// path splits a dotted path into keys; "-" (disabled) gives nil.
func path(p string) []string {
	if p == "-" || p == "" {
		return nil
	}
	return strings.Split(p, ".")
}

// Paths returns the dotted paths of the enabled consent fields, for the
// decoder to cut them out of each event (ingest.DecodeConfig.ConsentPaths):
// the consent stage then reads those few bytes (engine.ColConsentFields)
// instead of parsing the whole event again. Call after Defaults.
func (c Config) Paths() []string {
	var out []string
	for _, p := range []string{c.Fields.TCF, c.Fields.GPP, c.Fields.USP, c.Fields.GPC, c.Fields.Segment, c.Fields.RudderStack, c.Fields.MParticle} {
		if p != "" && p != "-" {
			out = append(out, p)
		}
	}
	return out
}
