package audience

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/RoaringBitmap/roaring/v2"
)

// naive evaluates an expression tree over dense boolean slices.
func naive(n *exprNode, sets map[Term][]bool, size int) []bool {
	out := make([]bool, size)
	switch n.op {
	case exTerm:
		copy(out, sets[n.term])
	case exNot:
		x := naive(n.kids[0], sets, size)
		for i := range out {
			out[i] = !x[i]
		}
	case exOr:
		for _, c := range n.kids {
			for i, v := range naive(c, sets, size) {
				out[i] = out[i] || v
			}
		}
	case exAnd:
		for i := range out {
			out[i] = true
		}
		for _, c := range n.kids {
			for i, v := range naive(c, sets, size) {
				out[i] = out[i] && v
			}
		}
	}
	return out
}

// genExpr prints a random expression over terms; parsing it back is part
// of what is tested.
func genExpr(r *rand.Rand, terms []string, depth int) string {
	if depth == 0 || r.IntN(3) == 0 {
		return terms[r.IntN(len(terms))]
	}
	switch r.IntN(4) {
	case 0:
		return "NOT " + genExpr(r, terms, depth-1)
	case 1:
		return "(" + genExpr(r, terms, depth-1) + ")"
	default:
		op := []string{" AND ", " OR ", " and ", " or "}[r.IntN(4)]
		n := 2 + r.IntN(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = genExpr(r, terms, depth-1)
		}
		return "(" + strings.Join(parts, op) + ")"
	}
}

func TestExprProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	terms := []string{"a", "b", "c", "vip", "consent:ads"}
	for round := 0; round < 150; round++ {
		// Up to a few 2^16 containers, so that every container kind and
		// container boundaries are crossed.
		universeN := uint32(1 + r.IntN(140000))
		src := mapSource{sets: map[Term]*roaring.Bitmap{}, universe: roaring.New()}
		src.universe.AddRange(0, uint64(universeN))
		sets := map[Term][]bool{}
		for _, name := range terms {
			e, err := ParseExpr(name)
			if err != nil {
				t.Fatal(err)
			}
			term := e.root.term
			bm := roaring.New()
			m := make([]bool, universeN)
			// Mix sparse, dense and run containers.
			switch r.IntN(3) {
			case 0:
				for j := 0; j < r.IntN(500); j++ {
					v := r.Uint32N(universeN)
					bm.Add(v)
				}
			case 1:
				for v := uint32(0); v < universeN; v++ {
					if r.IntN(3) == 0 {
						bm.Add(v)
					}
				}
			default:
				lo := r.Uint32N(universeN)
				bm.AddRange(uint64(lo), uint64(lo+r.Uint32N(universeN-lo+1)))
				bm.RunOptimize()
			}
			bm.Iterate(func(v uint32) bool { m[v] = true; return true })
			src.sets[term], sets[term] = bm, m
		}
		for k := 0; k < 5; k++ {
			s := genExpr(r, terms, 4)
			e, err := ParseExpr(s)
			if err != nil {
				t.Fatalf("ParseExpr(%q): %v", s, err)
			}
			// The printed form parses to the same thing.
			e2, err := ParseExpr(e.String())
			if err != nil || e2.String() != e.String() {
				t.Fatalf("round trip of %q: %q, %v", e.String(), e2, err)
			}
			before := map[Term]uint64{}
			for tm, bm := range src.sets {
				before[tm] = bm.GetCardinality()
			}
			want := naive(e.root, sets, int(universeN))
			wantN := 0
			for _, v := range want {
				if v {
					wantN++
				}
			}
			got, err := e.Eval(src)
			if err != nil {
				t.Fatal(err)
			}
			n, err := e.Count(src)
			if err != nil {
				t.Fatal(err)
			}
			if got.GetCardinality() != uint64(wantN) || n != uint64(wantN) {
				t.Fatalf("%s: eval %d, count %d, naive %d", e, got.GetCardinality(), n, wantN)
			}
			for v, in := range want {
				if in && !got.Contains(uint32(v)) {
					t.Fatalf("%s: missing %d", e, v)
				}
			}
			for tm, bm := range src.sets {
				if bm.GetCardinality() != before[tm] {
					t.Fatalf("%s modified the bitmap of %s", e, tm)
				}
			}
		}
	}
}

func TestExprErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "expression: at 0: expected a term, found the end"},
		{"vip AND", "expression: at 7: expected a term, found the end"},
		{"vip AND )", `expression: at 8: expected a term, found ")"`},
		{"(vip OR churned", `expression: at 15: expected ")", found the end`},
		{"vip churned", `expression: at 4: unexpected "churned"`},
		{"consent:", `expression: at 0: bad consent term "consent:" (want consent:PURPOSE)`},
		{"VIP", `expression: at 0: bad audience id "VIP"`},
		{"vip & churned", `expression: at 4: unexpected "&"`},
	} {
		_, err := ParseExpr(tc.in)
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseExpr(%q) = %v, want %s", tc.in, err, tc.want)
		}
	}
	e, err := ParseExpr("vip and consent:advertising AND NOT NOT NOT churned or (a)")
	if err != nil {
		t.Fatal(err)
	}
	if got := e.String(); got != "((vip AND consent:advertising AND NOT churned) OR a)" {
		t.Errorf("String = %s", got)
	}
	var names []string
	for _, tm := range e.Terms() {
		names = append(names, tm.String())
	}
	if !slices.Equal(names, []string{"a", "churned", "consent:advertising", "vip"}) {
		t.Errorf("Terms = %v", names)
	}
}
