package identity

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Refusal reasons (metric label values; merge-log rules add ":<type>").
const (
	ReasonLimit          = "limit"
	ReasonUnique         = "unique"
	ReasonApart          = "apart"
	ReasonCapMerges      = "cap_merges"
	ReasonCapIdentifiers = "cap_identifiers"
)

// resolve decides the identity changes one event causes, applies them to
// the batch's txn, and returns the event's profile (0: no usable
// identifier).
func (s *Stage) resolve(st, en int32, ts int64, msgID string, alias bool) (uint32, error) {
	s.gather(st, en)
	if len(s.cands) == 0 {
		return 0, nil
	}
	// Fast path: every identifier is known and they agree.
	pid := s.cands[0].pid
	for _, c := range s.cands[1:] {
		if c.pid != pid {
			pid = 0
			break
		}
	}
	if pid != 0 {
		return pid, s.touch(pid, ts)
	}
	return s.resolveSlow(ts, msgID, alias)
}

// touch advances last seen for the event's identifiers held by profile pid
// when the event is at least SeenGranularity newer. The identifier entries
// carry last seen, so the profile record is read only when a touch is due.
func (s *Stage) touch(pid uint32, ts int64) error {
	tx := s.tx
	gran := max(int64(s.g.cfg.SeenGranularity/time.Second), 1)
	sec := micros2secs(ts)
	due := false
	for _, c := range s.cands {
		if c.pid != 0 && sec-c.last >= gran {
			due = true
			break
		}
	}
	if !due {
		return nil
	}
	p, err := tx.get(pid)
	if err != nil {
		return err
	}
	if p == nil || p.redirect != 0 {
		return fmt.Errorf("%w: identifier points to profile %d, which is not live", ErrCorrupt, pid)
	}
	s.news = s.news[:0]
	for _, c := range s.cands {
		if c.pid == 0 {
			continue
		}
		sl := &s.slots[c.s]
		id, ok := sl.t.id, sl.t.id != 0
		if !ok {
			id, ok = tx.knownTypeID(sl.t.name)
		}
		if !ok {
			continue
		}
		if j := p.findIdent(id, &sl.h); j >= 0 && sec-p.idents[j].last >= gran {
			s.news = append(s.news, s.ident(sl))
		}
	}
	if len(s.news) == 0 {
		return nil
	}
	return tx.apply(&Op{Kind: OpTouch, Time: ts, Profile: pid, Idents: slices.Clone(s.news)})
}

func (s *Stage) ident(sl *slot) Ident {
	return Ident{Type: sl.t.name, Value: string(s.value(sl)), h: sl.h, hset: true}
}

// resolveSlow handles an event that creates, links or merges: it applies
// the rules, dropping the lowest-priority identifier and retrying while a
// rule is broken.
func (s *Stage) resolveSlow(ts int64, msgID string, alias bool) (uint32, error) {
	tx := s.tx
	s.sortCands()
	for {
		if err := s.collectParts(); err != nil {
			return 0, err
		}
		nNew := s.countNew()
		if len(s.parts) == 0 && nNew == 0 {
			return 0, nil
		}
		if len(s.parts) == 1 && nNew == 0 {
			break
		}
		if reason, t := s.checkRules(ts); reason != "" {
			if err := s.refuse(reason, t, ts, msgID); err != nil {
				return 0, err
			}
			s.cands = s.cands[:len(s.cands)-1]
			s.stats.demotions++
			continue
		}
		if len(s.parts) > 1 {
			if reason := s.checkCaps(); reason != "" {
				if err := s.refuse(reason, nil, ts, msgID); err != nil {
					return 0, err
				}
				s.restrict()
				continue
			}
		}
		break
	}

	// New identifiers, in priority order, up to the identifier cap.
	have := 0
	for _, p := range s.parts {
		have += len(p.idents)
	}
	s.news = s.news[:0]
	capped := false
	for _, c := range s.cands {
		if c.pid != 0 {
			continue
		}
		if mx := s.g.cfg.MaxIdentifiers; mx > 0 && have+len(s.news) >= mx {
			capped = true
			break
		}
		s.news = append(s.news, s.ident(&s.slots[c.s]))
	}
	if capped {
		if err := s.refuse(ReasonCapIdentifiers, nil, ts, msgID); err != nil {
			return 0, err
		}
	}

	if len(s.parts) == 0 {
		if len(s.news) == 0 {
			return 0, nil
		}
		id := tx.next
		return id, tx.apply(&Op{Kind: OpCreate, Time: ts, Profile: id, Idents: slices.Clone(s.news)})
	}
	target := s.parts[0].id
	if len(s.parts) > 1 {
		merged := make([]uint32, 0, len(s.parts)-1)
		for _, p := range s.parts[1:] {
			merged = append(merged, p.id)
		}
		rule := "alias"
		if !alias {
			rule = s.linkRule()
		}
		op := Op{Kind: OpMerge, Time: ts, Profile: target, Merged: merged, MessageID: strings.Clone(msgID), Rule: rule}
		if err := tx.apply(&op); err != nil {
			return 0, err
		}
	}
	if len(s.news) > 0 {
		if err := tx.apply(&Op{Kind: OpLink, Time: ts, Profile: target, Idents: slices.Clone(s.news)}); err != nil {
			return 0, err
		}
	}
	return target, s.touch(target, ts)
}

// collectParts sets s.parts to the distinct profiles of the candidates,
// oldest first.
func (s *Stage) collectParts() error {
	s.parts = s.parts[:0]
	for _, c := range s.cands {
		if c.pid == 0 || slices.ContainsFunc(s.parts, func(p *profile) bool { return p.id == c.pid }) {
			continue
		}
		p, err := s.tx.get(c.pid)
		if err != nil {
			return err
		}
		if p == nil || p.redirect != 0 {
			return fmt.Errorf("%w: identifier points to profile %d, which is not live", ErrCorrupt, c.pid)
		}
		s.parts = append(s.parts, p)
	}
	slices.SortFunc(s.parts, func(a, b *profile) int { return cmp.Compare(a.id, b.id) })
	return nil
}

func (s *Stage) countNew() int {
	n := 0
	for _, c := range s.cands {
		if c.pid == 0 {
			n++
		}
	}
	return n
}

// checkRules reports the first rule the union of s.parts and the new
// candidates would break: apart, then unique and limit per type. A type is
// checked only if the union changes its values (so a profile that broke a
// limit under an older config is not frozen).
func (s *Stage) checkRules(ts int64) (reason string, t *typeInfo) {
	for _, x := range s.parts {
		for _, a := range x.apart {
			for _, y := range s.parts {
				if y != x && (y.id == a || y.isMerged(a)) {
					return ReasonApart, nil
				}
			}
		}
	}
	s.tl = s.tl[:0]
	for pi, p := range s.parts {
		for _, x := range p.idents {
			if t := s.tx.typeAt(x.typ); t != nil && (t.unique || t.limit.Max > 0) {
				s.tl = append(s.tl, typeTime{t: t, first: x.first, src: pi})
			}
		}
	}
	sec := micros2secs(ts)
	for _, c := range s.cands {
		if t := s.slots[c.s].t; c.pid == 0 && (t.unique || t.limit.Max > 0) {
			s.tl = append(s.tl, typeTime{t: t, first: sec, src: -1})
		}
	}
	slices.SortFunc(s.tl, func(a, b typeTime) int {
		if c := cmp.Compare(a.t.prio, b.t.prio); c != 0 {
			return c
		}
		if c := strings.Compare(a.t.name, b.t.name); c != 0 {
			return c
		}
		return cmp.Compare(a.first, b.first)
	})
	for i := 0; i < len(s.tl); {
		j := i
		for j < len(s.tl) && s.tl[j].t == s.tl[i].t {
			j++
		}
		if g := s.tl[i:j]; touched(g) {
			t := g[0].t
			if t.unique && len(g) > 1 {
				return ReasonUnique, t
			}
			if t.limit.Max > 0 && maxInWindow(g, int64(t.limit.Window/time.Second)) > t.limit.Max {
				return ReasonLimit, t
			}
		}
		i = j
	}
	return "", nil
}

// touched reports whether a type's values come from more than one part or
// include a new identifier.
func touched(g []typeTime) bool {
	for _, x := range g {
		if x.src == -1 || x.src != g[0].src {
			return true
		}
	}
	return false
}

// maxInWindow returns the largest number of values first seen within any
// window of w seconds (all of them when w is 0); g is sorted by first.
func maxInWindow(g []typeTime, w int64) int {
	if w <= 0 {
		return len(g)
	}
	best, j := 0, 0
	for i := range g {
		for g[i].first-g[j].first >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

func (s *Stage) checkCaps() string {
	merges, idents := len(s.parts)-1, 0
	for _, p := range s.parts {
		merges += len(p.merged)
		idents += len(p.idents)
	}
	if mx := s.g.cfg.MaxMerges; mx > 0 && merges > mx {
		return ReasonCapMerges
	}
	if mx := s.g.cfg.MaxIdentifiers; mx > 0 && idents > mx {
		return ReasonCapIdentifiers
	}
	return ""
}

// restrict keeps the new candidates and those of the profile of the
// highest-priority known identifier: a capped merge does not happen, and
// the event resolves to that profile.
func (s *Stage) restrict() {
	var best uint32
	for _, c := range s.cands {
		if c.pid != 0 {
			best = c.pid
			break
		}
	}
	s.cands = slices.DeleteFunc(s.cands, func(c cand) bool { return c.pid != 0 && c.pid != best })
}

// refuse counts a refusal and records it in the merge log, once per batch
// for the same profiles and rule.
func (s *Stage) refuse(reason string, t *typeInfo, ts int64, msgID string) error {
	label, rule := "", reason
	if t != nil {
		label, rule = t.label, reason+":"+t.name
	}
	s.g.m.refused.WithLabelValues(reason, label).Inc()
	if len(s.parts) == 0 {
		return nil
	}
	k := refusal{survivor: s.parts[0].id, reason: rule}
	if len(s.parts) > 1 {
		k.other = s.parts[1].id
	}
	if s.refused[k] {
		return nil
	}
	s.refused[k] = true
	var merged []uint32
	for _, p := range s.parts[1:] {
		merged = append(merged, p.id)
	}
	return s.tx.apply(&Op{Kind: OpRefuse, Time: ts, Profile: s.parts[0].id, Merged: merged,
		MessageID: strings.Clone(msgID), Rule: rule})
}

// linkRule names the identifier types that joined the profiles of a merge:
// "event:" and the sorted distinct types of the event's known identifiers.
func (s *Stage) linkRule() string {
	var names []string
	for _, c := range s.cands {
		if n := s.slots[c.s].t.name; c.pid != 0 && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return "event:" + strings.Join(names, "+")
}

// sortCands orders the candidates by priority, then type name and value,
// so that demotion, and the read-only resolution of a replayed event, pick
// identifiers deterministically.
func (s *Stage) sortCands() {
	slices.SortFunc(s.cands, func(a, b cand) int {
		x, y := &s.slots[a.s], &s.slots[b.s]
		if c := cmp.Compare(x.t.prio, y.t.prio); c != 0 {
			return c
		}
		if c := strings.Compare(x.t.name, y.t.name); c != 0 {
			return c
		}
		return bytes.Compare(s.value(x), s.value(y))
	})
}
