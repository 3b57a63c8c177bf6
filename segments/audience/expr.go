package audience

import (
	"fmt"
	"sort"
	"strings"

	"github.com/RoaringBitmap/roaring/v2"
)

// Expr is a parsed set expression over audiences and consent purposes:
//
//	vip AND consent:advertising AND NOT churned
//	(a OR b) AND NOT (c OR consent:analytics)
//
// Terms are audience ids and consent:PURPOSE (the profiles that granted
// PURPOSE). Operators, case-insensitive, by binding strength: NOT, AND,
// OR; parentheses group. NOT is relative to the universe, the profiles the
// evaluating Source knows (for a Store: every profile it has seen).
type Expr struct {
	root *exprNode
}

type exprOp uint8

const (
	exTerm exprOp = iota
	exAnd
	exOr
	exNot
)

type exprNode struct {
	op   exprOp
	kids []*exprNode
	term Term
}

// Term is one leaf of an expression.
type Term struct {
	// Consent is true for consent:PURPOSE; Name is then the purpose, else
	// the audience id.
	Consent bool
	Name    string
}

func (t Term) String() string {
	if t.Consent {
		return "consent:" + t.Name
	}
	return t.Name
}

// Source gives an expression its bitmaps. The bitmaps it returns are read
// only: evaluation never modifies them.
type Source interface {
	Bitmap(t Term) (*roaring.Bitmap, error)
	Universe() *roaring.Bitmap
}

// ParseExpr parses s. Errors give the byte position of the problem:
// `expression: at 12: expected a term, found ")"`.
func ParseExpr(s string) (*Expr, error) {
	p := exprParser{s: s}
	p.next()
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	if p.tok != "" {
		return nil, p.errf("unexpected %q", p.tok)
	}
	return &Expr{root: n}, nil
}

// Terms returns the distinct terms of e, sorted.
func (e *Expr) Terms() []Term {
	seen := map[Term]bool{}
	var out []Term
	var walk func(n *exprNode)
	walk = func(n *exprNode) {
		if n.op == exTerm {
			if !seen[n.term] {
				seen[n.term] = true
				out = append(out, n.term)
			}
			return
		}
		for _, k := range n.kids {
			walk(k)
		}
	}
	walk(e.root)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// String prints e fully parenthesised.
func (e *Expr) String() string {
	var b strings.Builder
	var walk func(n *exprNode)
	walk = func(n *exprNode) {
		switch n.op {
		case exTerm:
			b.WriteString(n.term.String())
		case exNot:
			b.WriteString("NOT ")
			walk(n.kids[0])
		default:
			sep := " AND "
			if n.op == exOr {
				sep = " OR "
			}
			b.WriteByte('(')
			for i, k := range n.kids {
				if i > 0 {
					b.WriteString(sep)
				}
				walk(k)
			}
			b.WriteByte(')')
		}
	}
	walk(e.root)
	return b.String()
}

const maxExprDepth = 64

type exprParser struct {
	s      string
	pos    int // position after tok
	tokPos int
	tok    string
}

func (p *exprParser) errf(format string, args ...any) error {
	return fmt.Errorf("expression: at %d: %s", p.tokPos, fmt.Sprintf(format, args...))
}

func isTermByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == ':'
}

func (p *exprParser) next() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t' || p.s[p.pos] == '\n' || p.s[p.pos] == '\r') {
		p.pos++
	}
	p.tokPos = p.pos
	if p.pos >= len(p.s) {
		p.tok = ""
		return
	}
	c := p.s[p.pos]
	if c == '(' || c == ')' {
		p.tok = p.s[p.pos : p.pos+1]
		p.pos++
		return
	}
	if !isTermByte(c) {
		p.tok = p.s[p.pos : p.pos+1]
		p.pos++
		return
	}
	start := p.pos
	for p.pos < len(p.s) && isTermByte(p.s[p.pos]) {
		p.pos++
	}
	p.tok = p.s[start:p.pos]
}

func (p *exprParser) or(depth int) (*exprNode, error) {
	n, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(p.tok, "OR") {
		return n, nil
	}
	out := &exprNode{op: exOr, kids: []*exprNode{n}}
	for strings.EqualFold(p.tok, "OR") {
		p.next()
		k, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		out.kids = append(out.kids, k)
	}
	return out, nil
}

func (p *exprParser) and(depth int) (*exprNode, error) {
	n, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(p.tok, "AND") {
		return n, nil
	}
	out := &exprNode{op: exAnd, kids: []*exprNode{n}}
	for strings.EqualFold(p.tok, "AND") {
		p.next()
		k, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		out.kids = append(out.kids, k)
	}
	return out, nil
}

func (p *exprParser) unary(depth int) (*exprNode, error) {
	if depth > maxExprDepth {
		return nil, p.errf("nested deeper than %d levels", maxExprDepth)
	}
	switch {
	case p.tok == "":
		return nil, p.errf("expected a term, found the end")
	case strings.EqualFold(p.tok, "NOT"):
		p.next()
		k, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		if k.op == exNot { // NOT NOT x = x
			return k.kids[0], nil
		}
		return &exprNode{op: exNot, kids: []*exprNode{k}}, nil
	case p.tok == "(":
		p.next()
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if p.tok != ")" {
			if p.tok == "" {
				return nil, p.errf("expected \")\", found the end")
			}
			return nil, p.errf("expected \")\", found %q", p.tok)
		}
		p.next()
		return n, nil
	case strings.EqualFold(p.tok, "AND") || strings.EqualFold(p.tok, "OR") || p.tok == ")" || !isTermByte(p.tok[0]):
		return nil, p.errf("expected a term, found %q", p.tok)
	}
	t := Term{Name: p.tok}
	if name, ok := strings.CutPrefix(p.tok, "consent:"); ok {
		t = Term{Consent: true, Name: name}
		if name == "" || strings.Contains(name, ":") {
			return nil, p.errf("bad consent term %q (want consent:PURPOSE)", p.tok)
		}
	} else if !idRE.MatchString(p.tok) {
		return nil, p.errf("bad audience id %q", p.tok)
	}
	p.next()
	return &exprNode{op: exTerm, term: t}, nil
}

// Eval returns the set e denotes, a new bitmap the caller owns.
func (e *Expr) Eval(src Source) (*roaring.Bitmap, error) {
	bm, owned, err := eval(e.root, src)
	if err != nil {
		return nil, err
	}
	if !owned {
		bm = bm.Clone()
	}
	return bm, nil
}

// eval returns n's set; owned reports whether the bitmap is a fresh one
// (else it belongs to src and must not be modified).
func eval(n *exprNode, src Source) (bm *roaring.Bitmap, owned bool, err error) {
	switch n.op {
	case exTerm:
		bm, err := src.Bitmap(n.term)
		return bm, false, err
	case exNot:
		x, _, err := eval(n.kids[0], src)
		if err != nil {
			return nil, false, err
		}
		return roaring.AndNot(src.Universe(), x), true, nil
	case exOr:
		bms := make([]*roaring.Bitmap, len(n.kids))
		for i, k := range n.kids {
			if bms[i], _, err = eval(k, src); err != nil {
				return nil, false, err
			}
		}
		return roaring.FastOr(bms...), true, nil
	}
	pos, neg, err := split(n, src)
	if err != nil {
		return nil, false, err
	}
	var res *roaring.Bitmap
	if len(pos) == 0 {
		res = src.Universe().Clone()
	} else {
		res = roaring.FastAnd(pos...)
	}
	for _, x := range neg {
		res.AndNot(x)
	}
	return res, true, nil
}

// split evaluates the kids of an AND: the sets to intersect (smallest
// first, which FastAnd rewards) and the sets to subtract (kids under NOT).
func split(n *exprNode, src Source) (pos, neg []*roaring.Bitmap, err error) {
	for _, k := range n.kids {
		if k.op == exNot {
			x, _, err := eval(k.kids[0], src)
			if err != nil {
				return nil, nil, err
			}
			neg = append(neg, x)
			continue
		}
		x, _, err := eval(k, src)
		if err != nil {
			return nil, nil, err
		}
		pos = append(pos, x)
	}
	sort.Slice(pos, func(i, j int) bool { return pos[i].GetCardinality() < pos[j].GetCardinality() })
	return pos, neg, nil
}

// Count returns the size of the set e denotes without building it where
// the shape allows: A AND B is AndCardinality, A OR B OrCardinality,
// A AND B AND NOT C is |A ∧ B| - |A ∧ C ∧ B|, the intersections taken
// smallest set first.
func (e *Expr) Count(src Source) (uint64, error) {
	return count(e.root, src)
}

func count(n *exprNode, src Source) (uint64, error) {
	switch n.op {
	case exTerm:
		bm, err := src.Bitmap(n.term)
		if err != nil {
			return 0, err
		}
		return bm.GetCardinality(), nil
	case exNot:
		x, _, err := eval(n.kids[0], src)
		if err != nil {
			return 0, err
		}
		u := src.Universe()
		return u.GetCardinality() - u.AndCardinality(x), nil
	case exOr:
		if len(n.kids) == 2 {
			a, _, err := eval(n.kids[0], src)
			if err != nil {
				return 0, err
			}
			b, _, err := eval(n.kids[1], src)
			if err != nil {
				return 0, err
			}
			return a.OrCardinality(b), nil
		}
		bm, _, err := eval(n, src)
		if err != nil {
			return 0, err
		}
		return bm.GetCardinality(), nil
	}
	pos, neg, err := split(n, src)
	if err != nil {
		return 0, err
	}
	if len(pos) == 0 {
		pos = append(pos, src.Universe())
	}
	if len(neg) == 0 {
		return andCount(pos), nil
	}
	sub := neg[0]
	if len(neg) > 1 {
		sub = roaring.FastOr(neg...)
	}
	// |P ∧ ¬S| = |P| - |P ∧ S|: both are counts of intersections, and the
	// second, smallest sets first, stays small (array containers) where S
	// is small, instead of materialising P.
	return andCount(pos) - andCount(append(pos[:len(pos):len(pos)], sub)), nil
}

// andCount is the size of the intersection of bms, built only for all but
// the last two sets, smallest first.
func andCount(bms []*roaring.Bitmap) uint64 {
	sort.Slice(bms, func(i, j int) bool { return bms[i].GetCardinality() < bms[j].GetCardinality() })
	switch len(bms) {
	case 1:
		return bms[0].GetCardinality()
	case 2:
		return bms[0].AndCardinality(bms[1])
	}
	x := roaring.And(bms[0], bms[1])
	for _, bm := range bms[2 : len(bms)-1] {
		x.And(bm)
	}
	return x.AndCardinality(bms[len(bms)-1])
}
