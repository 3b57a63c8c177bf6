package sink

import (
	"encoding/json"
	"strings"

	"github.com/valyala/fastjson"
)

// IdentifierPaths maps an identifier type to the dotted JSON paths where
// events carry it (the decoder's identifier sources, userId and
// anonymousId): what a deletion notice's identifiers are checked against.
type IdentifierPaths map[string][]string

// DeletionIdentifiers returns ids as a sink that carries deletion notices
// may see them: a sink with field minimisation gets an identifier in
// plain where its events can carry it in plain (at one of the type's
// paths, or as a context.externalIds entry, which the decoder reads for
// every type: minimisation removes or keeps that array whole, it hashes
// strings only), as the SHA-256 hex its events would carry (Format
// "sha256") where it hashes it and nowhere keeps it plain, and not at all
// where it removes it. The hash is taken over the identifier as the
// identity graph keeps it (normalised): for emails that is what the sink's
// events hold (the minimiser trims and lower-cases them too); for a type
// whose normalisation changes more (phone digits, lower-cased advertising
// ids) it may differ from the hash of the raw value in the sink's events.
// Any other sink gets ids as they are. It is safe to call while the sink
// writes events.
func DeletionIdentifiers(s any, ids []Identifier, paths IdentifierPaths) []Identifier {
	var m *Minimizer
	switch w := s.(type) {
	case *routed:
		if mz, ok := w.Sink.(*minimized); ok {
			m = mz.m
		}
	case *minimized:
		m = w.m
	}
	if m == nil {
		return ids
	}
	view := &Minimizer{allow: m.allow, deny: m.deny, hash: m.hash} // its own parser and arena
	out := make([]Identifier, 0, len(ids))
	for _, id := range ids {
		plain := view.keepsExternalID(id)
		hashed := ""
		for _, p := range paths[id.Type] {
			if plain {
				break // nothing sees more
			}
			v, isHash, ok := view.see(p, id.Value)
			switch {
			case ok && !isHash:
				plain = true
			case ok && hashed == "":
				hashed = v
			}
		}
		switch {
		case plain:
			out = append(out, id)
		case hashed != "":
			out = append(out, Identifier{Type: id.Type, Value: hashed, Format: "sha256"})
		}
	}
	return out
}

// keepsExternalID reports whether the minimiser leaves id in plain as a
// context.externalIds entry.
func (m *Minimizer) keepsExternalID(id Identifier) bool {
	x := m.seeEvent(map[string]any{"context": map[string]any{"externalIds": []any{map[string]string{"id": id.Value, "type": id.Type}}}})
	for _, e := range x.GetArray("context", "externalIds") {
		if string(e.GetStringBytes("id")) == id.Value {
			return true
		}
	}
	return false
}

// see returns what of value, put at path in an event, the minimiser
// leaves there: the value itself, its hash (hashed), or nothing (!ok).
func (m *Minimizer) see(path, value string) (v string, hashed, ok bool) {
	keys := strings.Split(path, ".")
	var obj any = value
	for i := len(keys) - 1; i >= 0; i-- {
		obj = map[string]any{keys[i]: obj}
	}
	got := m.seeEvent(obj).Get(keys...)
	if got == nil || got.Type() != fastjson.TypeString {
		return "", false, false
	}
	s := string(got.GetStringBytes())
	return s, s != value, true
}

// seeEvent is event as the minimiser leaves it, parsed; nil (on which
// fastjson's getters find nothing) if it cannot be built.
func (m *Minimizer) seeEvent(event any) *fastjson.Value {
	raw, err := json.Marshal(event)
	if err != nil {
		return nil
	}
	out, err := m.Apply(nil, raw)
	if err != nil {
		return nil
	}
	var p fastjson.Parser
	x, err := p.ParseBytes(out)
	if err != nil {
		return nil
	}
	return x
}
