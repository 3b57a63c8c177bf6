package ingest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/valyala/fastjson"
)

// Reason codes of dead letters produced by the decoder. They are metric
// labels: the set is closed and listed in Reasons.
const (
	// ReasonTooLarge: the record is longer than DecodeConfig.MaxEventBytes.
	ReasonTooLarge engine.Reason = "too_large"
	// ReasonInvalidUTF8: the record is not valid UTF-8.
	ReasonInvalidUTF8 engine.Reason = "invalid_utf8"
	// ReasonMalformedJSON: the record is not one JSON value.
	ReasonMalformedJSON engine.Reason = "malformed_json"
	// ReasonNotObject: the record is JSON but not an object.
	ReasonNotObject engine.Reason = "not_object"
	// ReasonMissingType: no type, or type is null or "".
	ReasonMissingType engine.Reason = "missing_type"
	// ReasonUnknownType: type is a string but not one of the six call types
	// (the comparison is case-sensitive).
	ReasonUnknownType engine.Reason = "unknown_type"
	// ReasonMissingIdentity: neither userId nor anonymousId; for alias,
	// userId or previousId missing.
	ReasonMissingIdentity engine.Reason = "missing_identity"
	// ReasonMissingEvent: a track call without an event name.
	ReasonMissingEvent engine.Reason = "missing_event"
	// ReasonMissingGroupID: a group call without groupId.
	ReasonMissingGroupID engine.Reason = "missing_group_id"
	// ReasonBadTimestamp: timestamp, originalTimestamp or receivedAt is
	// present but not an RFC 3339 string.
	ReasonBadTimestamp engine.Reason = "bad_timestamp"
	// ReasonBadField: a field the decoder reads has the wrong JSON type, a
	// key it reads appears twice, an id is not a valid JSON number, or the
	// event carries more than DecodeConfig.MaxIdentifiers identifiers.
	ReasonBadField engine.Reason = "bad_field"
)

// Reasons lists every reason code the decoder produces, for registering
// metric label values up front. Callers must not modify it.
var Reasons = []engine.Reason{
	ReasonTooLarge,
	ReasonInvalidUTF8,
	ReasonMalformedJSON,
	ReasonNotObject,
	ReasonMissingType,
	ReasonUnknownType,
	ReasonMissingIdentity,
	ReasonMissingEvent,
	ReasonMissingGroupID,
	ReasonBadTimestamp,
	ReasonBadField,
}

// IdentifierSource names where one identifier type is found in an event.
type IdentifierSource struct {
	// Type is the identifier type written to the identifiers column, e.g.
	// "email".
	Type string `yaml:"type"`
	// Paths are dotted JSON paths from the event root, e.g.
	// "context.traits.email"; each segment is an object key (arrays are not
	// entered). Every path is read, in order, and each one that holds a
	// non-empty string or a number yields one identifier.
	Paths []string `yaml:"paths"`
}

// DecodeConfig configures the event decoder.
type DecodeConfig struct {
	// ConsentRecords accepts records of type "consent" (set by the caller
	// when a consent catalogue is configured; not read from YAML): they
	// identify a person like any event and carry consent fields. Without
	// it "consent" is an unknown type.
	ConsentRecords bool `yaml:"-"`
	// ConsentPaths are dotted JSON paths of consent-bearing fields (set by
	// the caller from the consent catalogue, not read from YAML). The
	// decoder copies them into the consent_fields column as one JSON object
	// with the event's nesting, so the consent stage need not parse the
	// whole event again. Empty: the column is null.
	ConsentPaths []string `yaml:"-"`
	// MaxEventBytes is the largest record accepted, in bytes; larger ones
	// are dead-lettered as too_large before any parsing. Default 32 KiB.
	MaxEventBytes int `yaml:"max_event_bytes"`
	// MaxIdentifiers caps the distinct identifiers of one event (configured
	// paths plus context.externalIds); an event with more is dead-lettered
	// as bad_field rather than silently losing some. Default 32.
	MaxIdentifiers int `yaml:"max_identifiers"`
	// StrictJSON validates every record against the JSON grammar (RFC
	// 8259) before parsing it. fastjson's parser tolerates NaN, numbers such
	// as 1.2.3, control characters and unknown escapes inside strings; with
	// StrictJSON such records are rejected as malformed_json instead of being
	// forwarded as they came. It about doubles the parse cost. Default off.
	StrictJSON bool `yaml:"strict_json"`
	// Identifiers says where to find identifiers beyond userId,
	// anonymousId, previousId and groupId, which have their own columns.
	// nil means DefaultIdentifiers; an empty non-nil list turns the paths
	// off. context.externalIds entries ({"id": ..., "type": ...}) are
	// always read, whatever this list says. Each path costs one object
	// lookup per event; paths sharing a prefix share its lookups.
	Identifiers []IdentifierSource `yaml:"identifiers"`
}

// DefaultIdentifiers returns the identifier paths used when
// DecodeConfig.Identifiers is nil. The result is a fresh copy.
func DefaultIdentifiers() []IdentifierSource {
	return []IdentifierSource{
		{Type: "email", Paths: []string{"traits.email", "context.traits.email"}},
		{Type: "phone", Paths: []string{"traits.phone", "context.traits.phone"}},
		{Type: "device_id", Paths: []string{"context.device.id"}},
		{Type: "advertising_id", Paths: []string{"context.device.advertisingId"}},
	}
}

// Defaults fills the zero fields of c with their defaults.
func (c *DecodeConfig) Defaults() {
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = 32 << 10
	}
	if c.MaxIdentifiers == 0 {
		c.MaxIdentifiers = 32
	}
	if c.Identifiers == nil {
		c.Identifiers = DefaultIdentifiers()
	}
}

// Validate reports the first invalid field of c, naming it by its yaml path.
func (c *DecodeConfig) Validate() error {
	if c.MaxEventBytes <= 0 {
		return errors.New("decode.max_event_bytes: must be > 0")
	}
	if c.MaxIdentifiers <= 0 {
		return errors.New("decode.max_identifiers: must be > 0")
	}
	for i, s := range c.Identifiers {
		field := "decode.identifiers[" + strconv.Itoa(i) + "]"
		if s.Type == "" {
			return errors.New(field + ".type: must not be empty")
		}
		if len(s.Paths) == 0 {
			return errors.New(field + ".paths: must list at least one path")
		}
		for j, p := range s.Paths {
			for _, seg := range strings.Split(p, ".") {
				if seg == "" {
					return errors.New(field + ".paths[" + strconv.Itoa(j) + "]: " + strconv.Quote(p) + " has an empty segment")
				}
			}
		}
	}
	return nil
}

// Identifier is one identifier found in an event. Both slices are only
// valid until the next Decode.
type Identifier struct {
	Type  []byte
	Value []byte
}

// Event is a decoded event. Every slice in it points into memory owned by
// the Decoder and is only valid until the next call to Decode; copy what
// must outlive it. A nil slice means the field is absent (or null, or "").
type Event struct {
	Type engine.EventType
	// MessageID is never empty: the event's messageId, or GeneratedID's
	// value when the event has none.
	MessageID []byte
	// Event is the event name (track), nil when absent.
	Event []byte
	// Timestamp is in microseconds since the Unix epoch, UTC.
	Timestamp                                int64
	UserID, AnonymousID, PreviousID, GroupID []byte
	Identifiers                              []Identifier
	// ConsentFields is the sparse JSON of DecodeConfig.ConsentPaths found
	// in the event ("{}" when none); nil when no paths are configured.
	ConsentFields []byte
}

// Decoder decodes Segment-spec JSON events. It holds one fastjson parser
// and scratch buffers that every call reuses, so it is not safe for
// concurrent use: give each goroutine its own.
type Decoder struct {
	maxBytes int
	maxIdent int
	strict   bool
	p        fastjson.Parser
	root     []pathNode // identifier path trie
	sources  []idSource
	leafVals []*fastjson.Value // per trie leaf, resolved value of the current event
	now      func() time.Time

	ev             Event
	f              fields
	consent        *consentNode // nil: no ConsentPaths
	consentRecords bool
	cbuf           []byte
	num            []byte   // number text of ids, grows once
	idBuf          [36]byte // generated message id
}

// pathNode is one segment of the identifier path trie. Paths sharing a
// prefix (context.traits.email, context.traits.phone) share nodes, so each
// object on the way is looked up once per event.
type pathNode struct {
	key      string
	leaf     int // index into Decoder.leafVals, -1 if no path ends here
	children []pathNode
}

type idSource struct {
	typ    []byte
	leaves []int
}

// fields holds the top-level values of the current event, nil when absent.
type fields struct {
	typ, messageID, event                    *fastjson.Value
	userID, anonymousID, previousID, groupID *fastjson.Value
	timestamp, originalTimestamp, receivedAt *fastjson.Value
	traits, properties, context              *fastjson.Value
	dup                                      string // first duplicated key
}

// NewDecoder returns a Decoder for cfg, after filling defaults and
// validating it.
func NewDecoder(cfg DecodeConfig) (*Decoder, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Decoder{
		consentRecords: cfg.ConsentRecords,
		maxBytes:       cfg.MaxEventBytes,
		maxIdent:       cfg.MaxIdentifiers,
		strict:         cfg.StrictJSON,
		now:            time.Now,
		num:            make([]byte, 0, 256),
	}
	nleaves := 0
	for _, s := range cfg.Identifiers {
		src := idSource{typ: []byte(s.Type)}
		for _, p := range s.Paths {
			src.leaves = append(src.leaves, addPath(&d.root, strings.Split(p, "."), &nleaves))
		}
		d.sources = append(d.sources, src)
	}
	d.leafVals = make([]*fastjson.Value, nleaves)
	d.ev.Identifiers = make([]Identifier, 0, cfg.MaxIdentifiers)
	if len(cfg.ConsentPaths) > 0 {
		d.consent = &consentNode{}
		for _, p := range cfg.ConsentPaths {
			d.consent.add(strings.Split(p, "."))
		}
		d.cbuf = make([]byte, 0, 512)
	}
	return d, nil
}

// consentNode is one segment of the consent path trie: a leaf copies the
// whole value; an inner node copies only its children that are present.
type consentNode struct {
	key  string
	name []byte // key quoted, with the colon: "key":
	leaf bool
	kids []*consentNode
}

func (n *consentNode) add(segs []string) {
	if n.leaf {
		return
	}
	if len(segs) == 0 {
		n.leaf, n.kids = true, nil
		return
	}
	for _, k := range n.kids {
		if k.key == segs[0] {
			k.add(segs[1:])
			return
		}
	}
	k := &consentNode{key: segs[0], name: append(strconv.AppendQuote(nil, segs[0]), ':')}
	n.kids = append(n.kids, k)
	k.add(segs[1:])
}

// appendSparse appends the members of object o that n selects, as a JSON
// object; values are re-encoded by fastjson (same JSON, not the same
// bytes). f, for the event's root object, holds the top-level fields the
// decoder already found (nil below the root).
func appendSparse(dst []byte, o *fastjson.Object, n *consentNode, f *fields) []byte {
	dst = append(dst, '{')
	first := true
	for _, k := range n.kids {
		var v *fastjson.Value
		if f != nil {
			v = f.top(k.key, o)
		} else {
			v = o.Get(k.key)
		}
		if v == nil {
			continue
		}
		mark := len(dst)
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, k.name...)
		switch {
		case k.leaf:
			dst = v.MarshalTo(dst)
		case v.Type() == fastjson.TypeObject:
			sub, _ := v.Object()
			inner := len(dst)
			dst = appendSparse(dst, sub, k, nil)
			if len(dst)-inner == 2 { // "{}": nothing selected below
				dst = dst[:mark]
				continue
			}
		default:
			dst = dst[:mark]
			continue
		}
		first = false
	}
	return append(dst, '}')
}

// addPath inserts segs into the trie rooted at nodes and returns the leaf
// index of its last segment, numbering new leaves from *nleaves.
func addPath(nodes *[]pathNode, segs []string, nleaves *int) int {
	var n *pathNode
	for _, seg := range segs {
		n = nil
		for i := range *nodes {
			if (*nodes)[i].key == seg {
				n = &(*nodes)[i]
				break
			}
		}
		if n == nil {
			*nodes = append(*nodes, pathNode{key: seg, leaf: -1})
			n = &(*nodes)[len(*nodes)-1]
		}
		nodes = &n.children
	}
	if n.leaf < 0 {
		n.leaf = *nleaves
		*nleaves++
	}
	return n.leaf
}

// Decode decodes one record. It returns the event and an empty reason, or
// a nil event, the reason it was rejected and a detail that names the
// failing field but holds no content of the record, so it may be logged.
//
// raw is not retained (the parser works on its own copy) and may be reused
// once Decode returns; the returned Event is valid until the next Decode.
// recTime is the event time used when the event has none of timestamp,
// originalTimestamp and receivedAt; when it is zero too, the current time
// is used.
//
// The checks run in this order and the first failure wins: size, UTF-8,
// JSON syntax, top-level object, duplicate keys among the fields read,
// type, field types, timestamps, the per-type requirements, the
// identifier count.
func (d *Decoder) Decode(raw []byte, recTime time.Time) (ev *Event, reason engine.Reason, detail string) {
	if len(raw) > d.maxBytes {
		return nil, ReasonTooLarge, "record of " + strconv.Itoa(len(raw)) +
			" bytes exceeds decode.max_event_bytes (" + strconv.Itoa(d.maxBytes) + ")"
	}
	if !utf8.Valid(raw) {
		return nil, ReasonInvalidUTF8, "invalid UTF-8 at byte " + strconv.Itoa(firstInvalidUTF8(raw))
	}
	if d.strict && fastjson.ValidateBytes(raw) != nil {
		return nil, ReasonMalformedJSON, "not valid JSON (strict)"
	}
	root, err := d.p.ParseBytes(raw)
	if err != nil {
		// fastjson's message quotes the unparsed input, which may hold
		// personal data: it is not passed on.
		return nil, ReasonMalformedJSON, "not a valid JSON value"
	}
	if t := root.Type(); t != fastjson.TypeObject {
		return nil, ReasonNotObject, "top-level value is " + typeName(t) + ", want object"
	}
	f := &d.f
	*f = fields{}
	root.GetObject().Visit(d.visitRoot)
	if f.dup != "" {
		return nil, ReasonBadField, f.dup + ": duplicate key"
	}

	ev = &d.ev
	ev.Type = engine.TypeUnknown
	if reason, detail = d.decodeType(ev); reason != "" {
		return nil, reason, detail
	}

	d.num = d.num[:0]
	if ev.MessageID, reason, detail = d.idField("messageId", f.messageID); reason != "" {
		return nil, reason, detail
	}
	if ev.UserID, reason, detail = d.idField("userId", f.userID); reason != "" {
		return nil, reason, detail
	}
	if ev.AnonymousID, reason, detail = d.idField("anonymousId", f.anonymousID); reason != "" {
		return nil, reason, detail
	}
	if ev.PreviousID, reason, detail = d.idField("previousId", f.previousID); reason != "" {
		return nil, reason, detail
	}
	if ev.GroupID, reason, detail = d.idField("groupId", f.groupID); reason != "" {
		return nil, reason, detail
	}
	if ev.Event, reason, detail = stringField("event", f.event); reason != "" {
		return nil, reason, detail
	}
	if reason, detail = objectField("traits", f.traits); reason != "" {
		return nil, reason, detail
	}
	if reason, detail = objectField("properties", f.properties); reason != "" {
		return nil, reason, detail
	}
	if reason, detail = objectField("context", f.context); reason != "" {
		return nil, reason, detail
	}
	if reason, detail = d.decodeTimestamp(ev, recTime); reason != "" {
		return nil, reason, detail
	}

	switch ev.Type {
	case engine.TypeAlias:
		if ev.UserID == nil || ev.PreviousID == nil {
			return nil, ReasonMissingIdentity, "alias: needs userId and previousId"
		}
	default:
		if ev.UserID == nil && ev.AnonymousID == nil {
			return nil, ReasonMissingIdentity, "needs userId or anonymousId"
		}
	}
	switch ev.Type {
	case engine.TypeTrack:
		if ev.Event == nil {
			return nil, ReasonMissingEvent, "track: needs event"
		}
	case engine.TypeGroup:
		if ev.GroupID == nil {
			return nil, ReasonMissingGroupID, "group: needs groupId"
		}
	}

	if reason, detail = d.decodeIdentifiers(root); reason != "" {
		return nil, reason, detail
	}
	if ev.MessageID == nil {
		ev.MessageID = d.generateID(raw)
	}
	ev.ConsentFields = nil
	if d.consent != nil {
		o, _ := root.Object()
		d.cbuf = appendSparse(d.cbuf[:0], o, d.consent, &d.f)
		ev.ConsentFields = d.cbuf
	}
	return ev, "", ""
}

// top returns the root object o's member key, from f where visitRoot kept
// it (the first of duplicates, as o.Get would).
func (f *fields) top(key string, o *fastjson.Object) *fastjson.Value {
	switch key {
	case "context":
		return f.context
	case "traits":
		return f.traits
	case "properties":
		return f.properties
	}
	return o.Get(key)
}

// visitRoot records the top-level fields the decoder reads. A method value
// passed to Visit does not escape, so it costs no allocation.
func (d *Decoder) visitRoot(key []byte, v *fastjson.Value) {
	var slot **fastjson.Value
	var name string
	f := &d.f
	switch string(key) {
	case "type":
		slot, name = &f.typ, "type"
	case "messageId":
		slot, name = &f.messageID, "messageId"
	case "event":
		slot, name = &f.event, "event"
	case "userId":
		slot, name = &f.userID, "userId"
	case "anonymousId":
		slot, name = &f.anonymousID, "anonymousId"
	case "previousId":
		slot, name = &f.previousID, "previousId"
	case "groupId":
		slot, name = &f.groupID, "groupId"
	case "timestamp":
		slot, name = &f.timestamp, "timestamp"
	case "originalTimestamp":
		slot, name = &f.originalTimestamp, "originalTimestamp"
	case "receivedAt":
		slot, name = &f.receivedAt, "receivedAt"
	case "traits":
		slot, name = &f.traits, "traits"
	case "properties":
		slot, name = &f.properties, "properties"
	case "context":
		slot, name = &f.context, "context"
	default:
		return
	}
	if *slot != nil {
		// fastjson's Get returns the first of duplicate keys, many other
		// parsers the last: a sink downstream could read another userId
		// than the one resolved here, so duplicates are rejected.
		if f.dup == "" {
			f.dup = name
		}
		return
	}
	*slot = v
}

func (d *Decoder) decodeType(ev *Event) (engine.Reason, string) {
	v := d.f.typ
	if v == nil || v.Type() == fastjson.TypeNull {
		return ReasonMissingType, "type: missing"
	}
	if t := v.Type(); t != fastjson.TypeString {
		return ReasonBadField, "type: " + typeName(t) + ", want string"
	}
	b, _ := v.StringBytes()
	if len(b) == 0 {
		return ReasonMissingType, "type: empty"
	}
	ev.Type = engine.ParseEventType(b)
	if ev.Type == engine.TypeUnknown || (ev.Type == engine.TypeConsent && !d.consentRecords) {
		return ReasonUnknownType, "type: not one of identify, track, page, screen, group, alias"
	}
	return "", ""
}

// idField returns the value of an id field: a non-empty string, or the JSON
// text of a number. nil when absent, null or "".
func (d *Decoder) idField(name string, v *fastjson.Value) ([]byte, engine.Reason, string) {
	if v == nil {
		return nil, "", ""
	}
	switch t := v.Type(); t {
	case fastjson.TypeNull:
		return nil, "", ""
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		if len(b) == 0 {
			return nil, "", ""
		}
		return b, "", ""
	case fastjson.TypeNumber:
		b, ok := d.numberText(v)
		if !ok {
			return nil, ReasonBadField, name + ": not a valid JSON number"
		}
		return b, "", ""
	default:
		return nil, ReasonBadField, name + ": " + typeName(t) + ", want string or number"
	}
}

// numberText appends the JSON text of the number v to d.num and returns
// it, if it is a valid JSON number (fastjson also takes NaN, Inf, 1.2.3).
// Earlier slices of d.num stay valid when it grows: they keep the old
// array, which is never written again.
func (d *Decoder) numberText(v *fastjson.Value) ([]byte, bool) {
	start := len(d.num)
	d.num = v.MarshalTo(d.num)
	b := d.num[start:]
	if !validNumber(b) {
		d.num = d.num[:start]
		return nil, false
	}
	return b[:len(b):len(b)], true
}

// stringField returns a non-empty string field, nil when absent, null or "".
func stringField(name string, v *fastjson.Value) ([]byte, engine.Reason, string) {
	if v == nil {
		return nil, "", ""
	}
	switch t := v.Type(); t {
	case fastjson.TypeNull:
		return nil, "", ""
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		if len(b) == 0 {
			return nil, "", ""
		}
		return b, "", ""
	default:
		return nil, ReasonBadField, name + ": " + typeName(t) + ", want string"
	}
}

func objectField(name string, v *fastjson.Value) (engine.Reason, string) {
	if v == nil {
		return "", ""
	}
	if t := v.Type(); t != fastjson.TypeObject && t != fastjson.TypeNull {
		return ReasonBadField, name + ": " + typeName(t) + ", want object"
	}
	return "", ""
}

// decodeTimestamp sets ev.Timestamp from timestamp, originalTimestamp,
// receivedAt (the first present wins), recTime or the clock. Every one
// present must parse, even when an earlier one wins: a bad value is a sign
// of a broken producer that should not pass unnoticed.
func (d *Decoder) decodeTimestamp(ev *Event, recTime time.Time) (engine.Reason, string) {
	f := &d.f
	have := false
	for _, c := range [...]struct {
		name string
		v    *fastjson.Value
	}{{"timestamp", f.timestamp}, {"originalTimestamp", f.originalTimestamp}, {"receivedAt", f.receivedAt}} {
		if c.v == nil {
			continue
		}
		t := c.v.Type()
		if t == fastjson.TypeNull {
			continue
		}
		if t != fastjson.TypeString {
			return ReasonBadTimestamp, c.name + ": " + typeName(t) + ", want an RFC 3339 string"
		}
		b, _ := c.v.StringBytes()
		m, ok := parseTimestamp(b)
		if !ok {
			return ReasonBadTimestamp, c.name + ": not an RFC 3339 timestamp"
		}
		if !have {
			ev.Timestamp, have = m, true
		}
	}
	if have {
		return "", ""
	}
	if recTime.IsZero() {
		recTime = d.now()
	}
	ev.Timestamp = recTime.UnixMicro()
	return "", ""
}

// decodeIdentifiers fills ev.Identifiers from the configured paths, in
// configuration order, then from context.externalIds, dropping repeats of
// the same (type, value).
func (d *Decoder) decodeIdentifiers(root *fastjson.Value) (engine.Reason, string) {
	ev := &d.ev
	ev.Identifiers = ev.Identifiers[:0]
	if len(d.leafVals) > 0 {
		clear(d.leafVals)
		d.resolve(root.GetObject(), d.root, true)
		for i := range d.sources {
			s := &d.sources[i]
			for _, l := range s.leaves {
				v := d.leafVals[l]
				if v == nil {
					continue
				}
				if val := d.scalar(v); val != nil && !d.addIdentifier(s.typ, val) {
					return ReasonBadField, "identifiers: more than decode.max_identifiers (" + strconv.Itoa(d.maxIdent) + ")"
				}
			}
		}
	}
	if c := d.f.context; c != nil && c.Type() == fastjson.TypeObject {
		ext := c.GetObject().Get("externalIds")
		if ext == nil || ext.Type() != fastjson.TypeArray {
			return "", ""
		}
		for _, e := range ext.GetArray() {
			if e.Type() != fastjson.TypeObject {
				continue
			}
			o := e.GetObject()
			typ, _, _ := stringField("", o.Get("type"))
			if typ == nil {
				continue
			}
			id := o.Get("id")
			if id == nil {
				continue
			}
			if val := d.scalar(id); val != nil && !d.addIdentifier(typ, val) {
				return ReasonBadField, "identifiers: more than decode.max_identifiers (" + strconv.Itoa(d.maxIdent) + ")"
			}
		}
	}
	return "", ""
}

// resolve looks up the children of one trie level in o, recording leaves
// and descending into objects. At the top level the objects found by
// visitRoot are reused instead of being looked up again.
func (d *Decoder) resolve(o *fastjson.Object, nodes []pathNode, top bool) {
	for i := range nodes {
		n := &nodes[i]
		var v *fastjson.Value
		if top {
			switch n.key {
			case "traits":
				v = d.f.traits
			case "context":
				v = d.f.context
			case "properties":
				v = d.f.properties
			default:
				v = o.Get(n.key)
			}
		} else {
			v = o.Get(n.key)
		}
		if v == nil {
			continue
		}
		if n.leaf >= 0 {
			d.leafVals[n.leaf] = v
		}
		if len(n.children) > 0 && v.Type() == fastjson.TypeObject {
			d.resolve(v.GetObject(), n.children, false)
		}
	}
}

// scalar returns the identifier value held by v: a non-empty string or a
// valid JSON number's text; nil for anything else, which is skipped, since
// traits are free-form user data and an odd shape there is no reason to
// reject the event.
func (d *Decoder) scalar(v *fastjson.Value) []byte {
	switch v.Type() {
	case fastjson.TypeString:
		b, _ := v.StringBytes()
		if len(b) == 0 {
			return nil
		}
		return b
	case fastjson.TypeNumber:
		b, _ := d.numberText(v)
		return b
	}
	return nil
}

// addIdentifier appends (typ, val) unless it is already there; false when
// the event already holds the maximum number of identifiers.
func (d *Decoder) addIdentifier(typ, val []byte) bool {
	ids := d.ev.Identifiers
	for i := range ids {
		if bytes.Equal(ids[i].Value, val) && bytes.Equal(ids[i].Type, typ) {
			return true
		}
	}
	if len(ids) >= d.maxIdent {
		return false
	}
	d.ev.Identifiers = append(ids, Identifier{Type: typ, Value: val})
	return true
}

// GeneratedIDPrefix starts every message id the decoder generates.
const GeneratedIDPrefix = "cdp-"

// generateID derives a message id from the record's bytes: "cdp-" and the
// hex of the first 16 bytes of their SHA-256. The same record always gets
// the same id, so a replayed record is de-duplicated downstream like one
// that carried its own messageId.
func (d *Decoder) generateID(raw []byte) []byte {
	sum := sha256.Sum256(raw)
	copy(d.idBuf[:], GeneratedIDPrefix)
	hex.Encode(d.idBuf[len(GeneratedIDPrefix):], sum[:16])
	return d.idBuf[:]
}

// validNumber reports whether b is a JSON number (RFC 8259 grammar).
func validNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i == len(b) || !isDigit(b[i]) {
			return false
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i == len(b)
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// typeName names a JSON type for details; fastjson's Type.String panics on
// its internal raw-string type, which Value.Type never returns.
func typeName(t fastjson.Type) string {
	switch t {
	case fastjson.TypeNull:
		return "null"
	case fastjson.TypeObject:
		return "object"
	case fastjson.TypeArray:
		return "array"
	case fastjson.TypeString:
		return "string"
	case fastjson.TypeNumber:
		return "number"
	case fastjson.TypeTrue, fastjson.TypeFalse:
		return "boolean"
	}
	return "unknown"
}

// unsafeBytes returns the bytes of s without copying. The result must not
// be written to, and must not outlive s's use.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
