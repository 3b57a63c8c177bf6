package iab

import (
	"errors"
	"strconv"
	"strings"
)

// ErrGPPHeader is wrapped by errors about the GPP header.
var ErrGPPHeader = errors.New("iab: bad GPP header")

// GPP section ids this package decodes.
const (
	SectionTCFEU = 2
	SectionTCFCA = 5
	SectionUSP   = 6
	SectionUSNat = 7
	SectionUSCA  = 8
	SectionUSVA  = 9
	SectionUSCO  = 10
	SectionUSUT  = 11
	SectionUSCT  = 12
)

var sectionNames = map[int]string{
	2: "tcfeuv2", 3: "gppv1", 4: "tcfeuv1", 5: "tcfcav1", 6: "uspv1", 7: "usnat", 8: "usca",
	9: "usva", 10: "usco", 11: "usut", 12: "usct",
}

// SectionName is the GPP API prefix of section id ("usnat"), or
// "section<id>" for ids this package does not know.
func SectionName(id int) string {
	if n, ok := sectionNames[id]; ok {
		return n
	}
	return "section" + strconv.Itoa(id)
}

// GPP is a decoded IAB Global Privacy Platform string.
type GPP struct {
	Type, Version int
	SectionIDs    []int
	Sections      []Section
	Warnings      []string
}

// Section is one section of a GPP string. Exactly one of TCF, USP, US is
// set when the section decoded; Err is set when it did not (a bad section
// does not invalidate the others); none is set for sections this package
// does not decode (tcfcav1, later US states), which keep only Raw.
type Section struct {
	ID  int
	Raw string
	TCF *TCF
	USP *USP
	US  *USSection
	Err error
}

// DecodeGPP decodes a GPP string: the header (type 3, version, Fibonacci
// range of section ids) and the '~'-separated sections in header order. A
// bad header is an error; a bad section is reported in its Section.Err.
// TCF EU sections are decoded strictly (see DecodeTCF).
func DecodeGPP(s string) (*GPP, error) {
	var scratch [64]byte
	head, rest, more := strings.Cut(s, "~")
	b, nbits, err := decodeSegment(scratch[:0], head)
	if err != nil {
		return nil, errors.New(ErrGPPHeader.Error() + ": " + err.Error())
	}
	var r bitReader
	r.reset(b, nbits)
	g := &GPP{Type: r.int(6), Version: r.int(6)}
	if r.err == nil && g.Type != 3 {
		return nil, errors.New(ErrGPPHeader.Error() + ": type " + strconv.Itoa(g.Type) + ", want 3")
	}
	n := r.int(12)
	last := 0
	g.SectionIDs = []int{}
	for i := 0; i < n && r.err == nil; i++ {
		if r.bool() {
			start := last + r.fib()
			end := start + r.fib()
			if end-start > 64 || end > 4096 {
				return nil, errors.New(ErrGPPHeader.Error() + ": section range too wide")
			}
			for id := start; id <= end && r.err == nil; id++ {
				g.SectionIDs = append(g.SectionIDs, id)
			}
			last = end
		} else {
			last += r.fib()
			g.SectionIDs = append(g.SectionIDs, last)
		}
		if len(g.SectionIDs) > 64 {
			return nil, errors.New(ErrGPPHeader.Error() + ": too many sections")
		}
	}
	if r.err != nil {
		return nil, errors.New(ErrGPPHeader.Error() + ": " + r.err.Error())
	}
	var raws []string
	for more {
		var seg string
		seg, rest, more = strings.Cut(rest, "~")
		raws = append(raws, seg)
	}
	if len(raws) != len(g.SectionIDs) {
		g.Warnings = append(g.Warnings, "section count mismatch with header")
	}
	for i := 0; i < len(raws) && i < len(g.SectionIDs); i++ {
		sec := Section{ID: g.SectionIDs[i], Raw: raws[i]}
		switch sec.ID {
		case SectionTCFEU:
			sec.TCF, sec.Err = DecodeTCF(sec.Raw, TCFOptions{})
		case SectionUSP:
			var u USP
			if u, sec.Err = DecodeUSP(sec.Raw); sec.Err == nil {
				sec.USP = &u
			}
		default:
			if _, ok := usLayouts[sec.ID]; ok {
				sec.US, sec.Err = decodeUS(sec.ID, sec.Raw)
			}
		}
		g.Sections = append(g.Sections, sec)
	}
	return g, nil
}

// Section returns the section with id, or nil.
func (g *GPP) Section(id int) *Section {
	for i := range g.Sections {
		if g.Sections[i].ID == id {
			return &g.Sections[i]
		}
	}
	return nil
}
