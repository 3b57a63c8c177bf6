package audience

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fastjson"
)

// Definition is an audience as the API and config carry it.
type Definition struct {
	// ID names the audience in URLs and set expressions: 1-64 characters
	// of [a-z0-9_-], starting with a letter.
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// ActivationPurpose, when set, makes the audience activation-safe: every
	// read (size, members, contains, query) intersects the members with the
	// profiles that granted this purpose.
	ActivationPurpose string    `json:"activation_purpose,omitempty"`
	Condition         Condition `json:"condition"`
	// Version counts definitions of this id from 1; set by the store.
	Version uint32 `json:"version"`
	// Created is when version 1 was stored, Updated when this version was.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Condition is one node of a condition tree: exactly one field is set.
type Condition struct {
	And      []Condition  `json:"and,omitempty"`
	Or       []Condition  `json:"or,omitempty"`
	Not      *Condition   `json:"not,omitempty"`
	Trait    *TraitCond   `json:"trait,omitempty"`
	Event    *EventCond   `json:"event,omitempty"`
	Consent  *ConsentCond `json:"consent,omitempty"`
	Audience string       `json:"audience,omitempty"`
}

// TraitCond compares a value at Path (dot-separated) of the profile's
// traits, which identify events set (later values overwrite earlier ones).
//
// Ops: eq, neq (true when the trait is missing too), in (Value is an
// array), exists, gt/gte/lt/lte (numbers), before/after (Value an RFC 3339
// time; the trait an RFC 3339 string or Unix seconds), within (Value a
// duration like "7d" or "12h": the trait time lies in the last Value),
// contains (substring of a string trait, or element of an array trait).
type TraitCond struct {
	Path  string          `json:"path"`
	Op    string          `json:"op"`
	Value json.RawMessage `json:"value,omitempty"`
}

// EventCond counts track events named Name whose properties match Where
// (paths relative to the event, e.g. "properties.total"), within the last
// Within (a whole number of days such as "30d"; empty: ever), and holds
// when the count lies in Count.
type EventCond struct {
	Name   string      `json:"name"`
	Where  []TraitCond `json:"where,omitempty"`
	Count  *CountRange `json:"count,omitempty"`
	Within string      `json:"within,omitempty"`
}

// CountRange bounds an event count: at least Min (default 1), at most Max
// (nil: no bound).
type CountRange struct {
	Min *int64 `json:"min,omitempty"`
	Max *int64 `json:"max,omitempty"`
}

// ConsentCond holds when the profile's state for Purpose is State:
// granted, denied or unknown (neither).
type ConsentCond struct {
	Purpose string `json:"purpose"`
	State   string `json:"state"`
}

// ValidationError points at the invalid node of a definition.
type ValidationError struct {
	Path string // e.g. "condition.and[2].event.count.min"
	Msg  string
}

func (e *ValidationError) Error() string { return e.Path + ": " + e.Msg }

func verr(path, format string, args ...any) error {
	return &ValidationError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

var idRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// maxDepth and maxNodes bound a condition tree so that a definition can
// never make evaluation unboundedly expensive.
const (
	maxDepth = 16
	maxNodes = 256
	maxDays  = 3660
)

// ParseDefinition decodes a definition from JSON, rejecting unknown fields
// (with the path of the object that carried them).
func ParseDefinition(b []byte) (Definition, error) {
	var d Definition
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("body: %w", err)
	}
	return d, nil
}

// opKind is a compiled comparison operator.
type opKind uint8

const (
	opEq opKind = iota + 1
	opNeq
	opIn
	opExists
	opGt
	opGte
	opLt
	opLte
	opBefore
	opAfter
	opWithin
	opContains
)

var opNames = map[string]opKind{"eq": opEq, "neq": opNeq, "in": opIn, "exists": opExists, "gt": opGt,
	"gte": opGte, "lt": opLt, "lte": opLte, "before": opBefore, "after": opAfter, "within": opWithin,
	"contains": opContains}

// pred is a compiled TraitCond.
type pred struct {
	path []string
	op   opKind
	// scalar is the comparison value for eq/neq/contains; set for in.
	scalar scalar
	set    []scalar
	num    float64
	t      int64 // unix µs (before/after) or a duration in µs (within)
}

// scalar is a JSON scalar: a string, a number or a bool.
type scalar struct {
	kind fastjson.Type
	s    string
	n    float64
	b    bool
}

func parseScalar(raw json.RawMessage) (scalar, bool) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return scalar{}, false
	}
	switch x := v.(type) {
	case string:
		return scalar{kind: fastjson.TypeString, s: x}, true
	case float64:
		return scalar{kind: fastjson.TypeNumber, n: x}, true
	case bool:
		if x {
			return scalar{kind: fastjson.TypeTrue, b: true}, true
		}
		return scalar{kind: fastjson.TypeFalse}, true
	}
	return scalar{}, false
}

func (s scalar) equal(v *fastjson.Value) bool {
	switch v.Type() {
	case fastjson.TypeString:
		if s.kind != fastjson.TypeString {
			return false
		}
		b, _ := v.StringBytes()
		return string(b) == s.s
	case fastjson.TypeNumber:
		f, _ := v.Float64()
		return s.kind == fastjson.TypeNumber && f == s.n
	case fastjson.TypeTrue:
		return s.kind == fastjson.TypeTrue
	case fastjson.TypeFalse:
		return s.kind == fastjson.TypeFalse
	}
	return false
}

// ParseDuration parses "30d", "12h", "90m", "45s" or any time.ParseDuration
// string.
func ParseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := strconv.Atoi(n)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(d) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func compilePred(path string, c TraitCond) (pred, error) {
	var p pred
	if c.Path == "" {
		return p, verr(path+".path", "must be set")
	}
	p.path = strings.Split(c.Path, ".")
	for _, s := range p.path {
		if s == "" {
			return p, verr(path+".path", "%q has an empty segment", c.Path)
		}
	}
	op, ok := opNames[c.Op]
	if !ok {
		return p, verr(path+".op", "unknown op %q (want eq, neq, in, exists, gt, gte, lt, lte, before, after, within, contains)", c.Op)
	}
	p.op = op
	vpath := path + ".value"
	if op == opExists {
		if len(c.Value) > 0 {
			return p, verr(vpath, "exists takes no value")
		}
		return p, nil
	}
	if len(c.Value) == 0 {
		return p, verr(vpath, "must be set for op %s", c.Op)
	}
	switch op {
	case opEq, opNeq, opContains:
		s, ok := parseScalar(c.Value)
		if !ok {
			return p, verr(vpath, "must be a string, number or boolean")
		}
		p.scalar = s
	case opIn:
		var arr []json.RawMessage
		if err := json.Unmarshal(c.Value, &arr); err != nil || len(arr) == 0 {
			return p, verr(vpath, "must be a non-empty array")
		}
		for i, raw := range arr {
			s, ok := parseScalar(raw)
			if !ok {
				return p, verr(fmt.Sprintf("%s[%d]", vpath, i), "must be a string, number or boolean")
			}
			p.set = append(p.set, s)
		}
	case opGt, opGte, opLt, opLte:
		var f float64
		if err := json.Unmarshal(c.Value, &f); err != nil || math.IsNaN(f) {
			return p, verr(vpath, "must be a number")
		}
		p.num = f
	case opBefore, opAfter:
		var s string
		if err := json.Unmarshal(c.Value, &s); err != nil {
			return p, verr(vpath, "must be an RFC 3339 time string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return p, verr(vpath, "must be an RFC 3339 time string")
		}
		p.t = t.UnixMicro()
	case opWithin:
		var s string
		if err := json.Unmarshal(c.Value, &s); err != nil {
			return p, verr(vpath, `must be a duration string such as "7d" or "12h"`)
		}
		d, err := ParseDuration(s)
		if err != nil || d <= 0 {
			return p, verr(vpath, `must be a positive duration such as "7d" or "12h"`)
		}
		p.t = d.Microseconds()
	}
	return p, nil
}

// match evaluates p against root (an object; nil when nothing is known).
func (p *pred) match(root *fastjson.Value, nowMicro int64) bool {
	var v *fastjson.Value
	if root != nil {
		v = root.Get(p.path...)
	}
	if v == nil || v.Type() == fastjson.TypeNull {
		return p.op == opNeq
	}
	switch p.op {
	case opExists:
		return true
	case opEq:
		return p.scalar.equal(v)
	case opNeq:
		return !p.scalar.equal(v)
	case opIn:
		for _, s := range p.set {
			if s.equal(v) {
				return true
			}
		}
		return false
	case opGt, opGte, opLt, opLte:
		f, err := v.Float64()
		if err != nil {
			return false
		}
		switch p.op {
		case opGt:
			return f > p.num
		case opGte:
			return f >= p.num
		case opLt:
			return f < p.num
		}
		return f <= p.num
	case opBefore, opAfter, opWithin:
		t, ok := timeOf(v)
		if !ok {
			return false
		}
		switch p.op {
		case opBefore:
			return t < p.t
		case opAfter:
			return t > p.t
		}
		return t <= nowMicro && t >= nowMicro-p.t
	case opContains:
		switch v.Type() {
		case fastjson.TypeString:
			b, _ := v.StringBytes()
			return p.scalar.kind == fastjson.TypeString && strings.Contains(string(b), p.scalar.s)
		case fastjson.TypeArray:
			arr, _ := v.Array()
			for _, e := range arr {
				if p.scalar.equal(e) {
					return true
				}
			}
		}
	}
	return false
}

// timeOf reads an RFC 3339 string or Unix seconds as Unix µs.
func timeOf(v *fastjson.Value) (int64, bool) {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil {
			return 0, false
		}
		return t.UnixMicro(), true
	case fastjson.TypeNumber:
		f, err := v.Float64()
		if err != nil {
			return 0, false
		}
		return int64(f * 1e6), true
	}
	return 0, false
}

// nodeKind is the kind of a compiled node.
type nodeKind uint8

const (
	nAnd nodeKind = iota + 1
	nOr
	nNot
	nTrait
	nEvent
	nConsent
	nAudience
)

// Consent states of a ConsentCond.
const (
	StateGranted = "granted"
	StateDenied  = "denied"
	StateUnknown = "unknown"
)

// node is a compiled condition.
type node struct {
	kind nodeKind
	kids []*node
	pred pred
	// event
	ctr      *counterDef
	min, max int64 // max < 0: unbounded
	days     int   // 0: ever
	// consent
	purpose string
	state   string
	// audience
	ref string
}

// counterDef identifies one event counter: an event name and property
// conditions. Counters with the same name and conditions share an id, so
// audiences that ask the same question share the count.
type counterDef struct {
	id    uint64
	name  string
	where []pred
}

// deps summarises what a compiled tree reads, to decide which batches can
// affect an audience.
type deps struct {
	traits    bool
	consent   bool
	clock     bool // event windows: results change when the day changes
	exact     bool // trait "within": results change at any time
	events    []string
	counters  []*counterDef
	audiences []string
	purposes  []string
}

// compile validates d.Condition and compiles it. known reports whether an
// audience id exists (for references); purposes, if non-nil, lists the
// valid consent purposes.
func compile(d *Definition, known func(string) bool, purposes []string) (*node, *deps, error) {
	if !idRE.MatchString(d.ID) {
		return nil, nil, verr("id", "must be 1-64 characters of a-z, 0-9, _ and -, starting with a letter")
	}
	if d.ActivationPurpose != "" && purposes != nil && !contains(purposes, d.ActivationPurpose) {
		return nil, nil, verr("activation_purpose", "unknown purpose %q", d.ActivationPurpose)
	}
	c := compiler{known: known, purposes: purposes, self: d.ID, dp: &deps{}}
	n, err := c.node("condition", &d.Condition, 0)
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(c.dp.events)
	return n, c.dp, nil
}

type compiler struct {
	known    func(string) bool
	purposes []string
	self     string
	dp       *deps
	nodes    int
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (c *compiler) node(path string, cd *Condition, depth int) (*node, error) {
	c.nodes++
	if c.nodes > maxNodes {
		return nil, verr(path, "condition has more than %d nodes", maxNodes)
	}
	if depth > maxDepth {
		return nil, verr(path, "nested deeper than %d levels", maxDepth)
	}
	set := 0
	if cd.And != nil {
		set++
	}
	if cd.Or != nil {
		set++
	}
	if cd.Not != nil {
		set++
	}
	if cd.Trait != nil {
		set++
	}
	if cd.Event != nil {
		set++
	}
	if cd.Consent != nil {
		set++
	}
	if cd.Audience != "" {
		set++
	}
	if set != 1 {
		return nil, verr(path, "must have exactly one of and, or, not, trait, event, consent, audience (has %d)", set)
	}
	switch {
	case cd.And != nil || cd.Or != nil:
		n := &node{kind: nAnd}
		list, name := cd.And, "and"
		if cd.Or != nil {
			n.kind, list, name = nOr, cd.Or, "or"
		}
		if len(list) == 0 {
			return nil, verr(path+"."+name, "must not be empty")
		}
		for i := range list {
			k, err := c.node(fmt.Sprintf("%s.%s[%d]", path, name, i), &list[i], depth+1)
			if err != nil {
				return nil, err
			}
			n.kids = append(n.kids, k)
		}
		return n, nil
	case cd.Not != nil:
		k, err := c.node(path+".not", cd.Not, depth+1)
		if err != nil {
			return nil, err
		}
		return &node{kind: nNot, kids: []*node{k}}, nil
	case cd.Trait != nil:
		p, err := compilePred(path+".trait", *cd.Trait)
		if err != nil {
			return nil, err
		}
		c.dp.traits = true
		c.dp.exact = c.dp.exact || p.op == opWithin
		return &node{kind: nTrait, pred: p}, nil
	case cd.Event != nil:
		return c.event(path+".event", cd.Event)
	case cd.Consent != nil:
		p := path + ".consent"
		if cd.Consent.Purpose == "" {
			return nil, verr(p+".purpose", "must be set")
		}
		if c.purposes != nil && !contains(c.purposes, cd.Consent.Purpose) {
			return nil, verr(p+".purpose", "unknown purpose %q", cd.Consent.Purpose)
		}
		switch cd.Consent.State {
		case StateGranted, StateDenied, StateUnknown:
		default:
			return nil, verr(p+".state", "must be granted, denied or unknown, not %q", cd.Consent.State)
		}
		c.dp.consent = true
		if !contains(c.dp.purposes, cd.Consent.Purpose) {
			c.dp.purposes = append(c.dp.purposes, cd.Consent.Purpose)
		}
		return &node{kind: nConsent, purpose: cd.Consent.Purpose, state: cd.Consent.State}, nil
	default:
		ref := cd.Audience
		if ref == c.self {
			return nil, verr(path+".audience", "an audience cannot contain itself")
		}
		if c.known != nil && !c.known(ref) {
			return nil, verr(path+".audience", "unknown audience %q", ref)
		}
		if !contains(c.dp.audiences, ref) {
			c.dp.audiences = append(c.dp.audiences, ref)
		}
		return &node{kind: nAudience, ref: ref}, nil
	}
}

func (c *compiler) event(p string, e *EventCond) (*node, error) {
	if e.Name == "" {
		return nil, verr(p+".name", "must be set")
	}
	n := &node{kind: nEvent, min: 1, max: -1}
	ctr := &counterDef{name: e.Name}
	h := fnv.New64a()
	h.Write([]byte(e.Name))
	for i, w := range e.Where {
		pr, err := compilePred(fmt.Sprintf("%s.where[%d]", p, i), w)
		if err != nil {
			return nil, err
		}
		if pr.op == opWithin {
			return nil, verr(fmt.Sprintf("%s.where[%d].op", p, i), "within is not supported on event properties")
		}
		ctr.where = append(ctr.where, pr)
		h.Write([]byte{0})
		h.Write([]byte(w.Path))
		h.Write([]byte{0})
		h.Write([]byte(w.Op))
		h.Write([]byte{0})
		h.Write(canonical(w.Value))
	}
	ctr.id = h.Sum64()
	n.ctr = ctr
	if e.Count != nil {
		if e.Count.Min != nil {
			if *e.Count.Min < 0 {
				return nil, verr(p+".count.min", "must be >= 0")
			}
			n.min = *e.Count.Min
		}
		if e.Count.Max != nil {
			if *e.Count.Max < 0 {
				return nil, verr(p+".count.max", "must be >= 0")
			}
			if *e.Count.Max < n.min {
				return nil, verr(p+".count.max", "must be >= count.min (%d)", n.min)
			}
			n.max = *e.Count.Max
		}
	}
	if e.Within != "" {
		d, err := ParseDuration(e.Within)
		if err != nil || d <= 0 || d%(24*time.Hour) != 0 {
			return nil, verr(p+".within", `must be a whole number of days such as "30d" (windows slide by day)`)
		}
		n.days = int(d / (24 * time.Hour))
		if n.days > maxDays {
			return nil, verr(p+".within", "must be at most %dd", maxDays)
		}
		c.dp.clock = true
	}
	if !contains(c.dp.events, e.Name) {
		c.dp.events = append(c.dp.events, e.Name)
	}
	c.dp.counters = append(c.dp.counters, ctr)
	return n, nil
}

// canonical re-encodes a JSON value so that formatting does not change a
// counter's id.
func canonical(raw json.RawMessage) []byte {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw
	}
	b, _ := json.Marshal(v)
	return b
}
