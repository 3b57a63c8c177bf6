package identity

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble"
)

// ProfileView is a profile as the lookup API shows it. Values are plain
// normalised values; the HTTP handler masks them.
type ProfileView struct {
	ProfileID uint32 `json:"profile_id"`
	// RequestedID is the id asked for when it was merged into ProfileID.
	RequestedID uint32           `json:"requested_profile_id,omitempty"`
	Created     time.Time        `json:"created"`
	Identifiers []IdentifierView `json:"identifiers"`
	Merged      []uint32         `json:"merged,omitempty"`
	Apart       []uint32         `json:"apart,omitempty"`
	History     []LogEntry       `json:"history"`
}

// IdentifierView is one identifier of a profile.
type IdentifierView struct {
	Type      string    `json:"type"`
	Value     string    `json:"value"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Lookup returns the profile holding the identifier (typ, value); value is
// normalised first. ErrNotFound if no profile holds it.
func (g *Graph) Lookup(typ, value string) (ProfileView, error) {
	return g.LookupRef(Ref{Type: typ, Value: value})
}

// LookupHash returns the profile holding the identifier of type typ whose
// normalised value has SHA-256 sum: a hashed identity of a privacy request
// (OpenDSR identity_format sha256). sum must be taken over the value
// exactly as typ's normaliser leaves it (doc.go, "Hashed identities"); a
// hash of another form of the value finds nothing. ErrNotFound if no
// profile holds it or typ is unknown.
func (g *Graph) LookupHash(typ string, sum [sha256.Size]byte) (ProfileView, error) {
	return g.LookupRef(Ref{Type: typ, SHA256: sum, Hashed: true})
}

// Ref names an identifier given by a caller rather than found in an event:
// its type and either its value (normalised by the type's rule before use)
// or, when Hashed, the SHA-256 of its normalised value.
type Ref struct {
	Type   string
	Value  string
	SHA256 [sha256.Size]byte
	Hashed bool
}

// LookupRef returns the profile holding the identifier r names.
// ErrNotFound if no profile holds it.
func (g *Graph) LookupRef(r Ref) (ProfileView, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var h hash
	if err := g.hashRef(&h, r); err != nil {
		return ProfileView{}, err
	}
	e, err := g.lookupIdent(&h)
	if err != nil {
		return ProfileView{}, err
	}
	if e.pid == 0 {
		return ProfileView{}, ErrNotFound
	}
	return g.viewLocked(e.pid)
}

// hashRef sets h to the key of the identifier r names. g.mu must be held.
func (g *Graph) hashRef(h *hash, r Ref) error {
	if !r.Hashed {
		x, err := g.normIdent(r.Type, r.Value)
		if err != nil {
			return err
		}
		g.hashInto(h, x.Type, []byte(x.Value))
		return nil
	}
	t := g.types[r.Type]
	if t == nil {
		return fmt.Errorf("%w: unknown identifier type %q", ErrNotFound, r.Type)
	}
	g.hashSumInto(h, t.name, &r.SHA256)
	return nil
}

// Profile returns profile id, following a redirect if id was merged.
func (g *Graph) Profile(id uint32) (ProfileView, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.viewLocked(id)
}

func (g *Graph) viewLocked(id uint32) (ProfileView, error) {
	p, err := g.loadProfile(id)
	if err != nil {
		return ProfileView{}, err
	}
	if p == nil {
		return ProfileView{}, ErrNotFound
	}
	v := ProfileView{}
	if p.redirect != 0 {
		v.RequestedID = id
		if p, err = g.loadProfile(p.redirect); err != nil {
			return ProfileView{}, err
		}
		if p == nil || p.redirect != 0 {
			return ProfileView{}, fmt.Errorf("%w: redirect of profile %d", ErrCorrupt, id)
		}
	}
	v.ProfileID = p.id
	v.Created = time.Unix(p.created, 0).UTC()
	vals, err := g.values(p)
	if err != nil {
		return ProfileView{}, err
	}
	v.Identifiers = make([]IdentifierView, 0, len(p.idents))
	for i, x := range p.idents {
		name := "unknown"
		if int(x.typ) < len(g.byID) {
			name = g.byID[x.typ].name
		}
		v.Identifiers = append(v.Identifiers, IdentifierView{Type: name, Value: vals[i],
			FirstSeen: time.Unix(x.first, 0).UTC(), LastSeen: time.Unix(x.last, 0).UTC()})
	}
	for _, m := range p.merged {
		v.Merged = append(v.Merged, m.id)
	}
	v.Apart = slices.Clone(p.apart)
	v.History, err = g.history(append([]uint32{p.id}, v.Merged...))
	return v, err
}

// history returns the merge-log entries that name any of ids, in log order.
func (g *Graph) history(ids []uint32) ([]LogEntry, error) {
	var seqs []uint64
	for _, id := range ids {
		it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: logIdxKey(nil, id, 0), UpperBound: logIdxKey(nil, id+1, 0)})
		if err != nil {
			return nil, fmt.Errorf("cannot read merge log index: %w", err)
		}
		for it.First(); it.Valid(); it.Next() {
			if k := it.Key(); len(k) == 13 {
				seqs = append(seqs, be64(k[5:]))
			}
		}
		err = it.Close()
		if err != nil {
			return nil, fmt.Errorf("cannot read merge log index: %w", err)
		}
	}
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	out := make([]LogEntry, 0, len(seqs))
	for _, seq := range seqs {
		v, closer, err := g.db.Get(logKey(nil, seq))
		if errors.Is(err, pebble.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read merge log: %w", err)
		}
		e, err := decodeLogEntry(seq, v)
		closer.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Log returns the merge log from sequence number from on, at most limit
// entries (0: all).
func (g *Graph) Log(from uint64, limit int) ([]LogEntry, error) {
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: logKey(nil, from), UpperBound: []byte{prefixLog + 1}})
	if err != nil {
		return nil, fmt.Errorf("cannot read merge log: %w", err)
	}
	defer it.Close()
	var out []LogEntry
	for it.First(); it.Valid() && (limit <= 0 || len(out) < limit); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return nil, corrupt("merge log key")
		}
		e, err := decodeLogEntry(be64(k[1:]), it.Value())
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// Check verifies the graph's invariants by reading all of it: every
// identifier key points to a live profile that lists the identifier, every
// listed identifier's key points back, every redirect points one hop to a
// live profile that lists it as merged, every profile id is below the
// counter, and every stored value (decrypted with the keyring) hashes to
// the identifier hash stored beside it; and the suppression families agree
// with each other and with memory (suppress.go). It is meant for tests and
// offline checks.
func (g *Graph) Check() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	profiles := map[uint32]*profile{}
	it, err := g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixProfile}, UpperBound: []byte{prefixProfile + 1}})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 5 {
			it.Close()
			return corrupt("profile key")
		}
		p, err := g.decodeProfile(be32(k[1:]), it.Value())
		if err != nil {
			it.Close()
			return err
		}
		profiles[p.id] = p
	}
	if err := it.Close(); err != nil {
		return err
	}
	want := map[hash]identEntry{}
	for id, p := range profiles {
		if id == 0 || id >= g.next {
			return fmt.Errorf("profile %d not below the counter %d", id, g.next)
		}
		if p.redirect != 0 {
			s := profiles[p.redirect]
			if s == nil || s.redirect != 0 || !s.isMerged(id) {
				return fmt.Errorf("redirect %d → %d is not one hop to a live profile listing it", id, p.redirect)
			}
			continue
		}
		for _, m := range p.merged {
			if r := profiles[m.id]; r == nil || r.redirect != id {
				return fmt.Errorf("profile %d lists %d as merged, which does not redirect to it", id, m.id)
			}
		}
		vals, err := g.values(p)
		if err != nil {
			return err
		}
		for i, x := range p.idents {
			if int(x.typ) >= len(g.byID) || x.typ == 0 {
				return fmt.Errorf("profile %d holds an identifier of unknown type %d", id, x.typ)
			}
			var h hash
			g.hashInto(&h, g.byID[x.typ].name, []byte(vals[i]))
			if h != x.h {
				return fmt.Errorf("profile %d: an identifier's value does not match its hash", id)
			}
			if other, dup := want[h]; dup {
				return fmt.Errorf("identifier held by profiles %d and %d", other.pid, id)
			}
			want[h] = identEntry{id, x.last}
		}
	}
	it, err = g.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixIdent}, UpperBound: []byte{prefixIdent + 1}})
	if err != nil {
		return err
	}
	n := 0
	for it.First(); it.Valid(); it.Next() {
		var h hash
		if len(it.Key()) != 1+hashLen {
			it.Close()
			return corrupt("identifier key")
		}
		copy(h[:], it.Key()[1:])
		e, err := decodeIdentValue(it.Value())
		if err != nil {
			it.Close()
			return err
		}
		if want[h] != e {
			it.Close()
			return fmt.Errorf("identifier key holds %+v, its profile record %+v", e, want[h])
		}
		n++
	}
	if err := it.Close(); err != nil {
		return err
	}
	if n != len(want) {
		return fmt.Errorf("%d identifier keys for %d identifiers held by profiles", n, len(want))
	}
	return g.checkSuppression()
}
