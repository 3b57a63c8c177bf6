package iab

import (
	"errors"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Errors of the TCF decoder. ErrTCFPolicy is returned (wrapped) for a
// string that decodes but breaks a TCF v2.2 rule.
var (
	ErrTCFVersion = errors.New("iab: not a v2 TC string")
	ErrTCFPolicy  = errors.New("iab: TC string invalid under TCF v2.2")
)

// TCF is a decoded IAB TCF v2 TC string: the core segment and the optional
// disclosed-vendors, allowed-vendors and publisher-TC segments. Purpose,
// special-feature and vendor ids are 1-based, as in the specification.
type TCF struct {
	Version             int
	Created             time.Time
	LastUpdated         time.Time
	CmpID               int
	CmpVersion          int
	ConsentScreen       int
	ConsentLanguage     string
	VendorListVersion   int
	PolicyVersion       int
	IsServiceSpecific   bool
	UseNonStandardTexts bool
	// SpecialFeatureOptIns has bit i-1 set when special feature i (1-12)
	// is opted in.
	SpecialFeatureOptIns uint16
	// PurposeConsents and PurposeLI have bit i-1 set for purpose i (1-24):
	// consent, and legitimate-interest transparency established.
	PurposeConsents     uint32
	PurposeLI           uint32
	PurposeOneTreatment bool
	PublisherCC         string
	VendorConsents      Vendors
	VendorLI            Vendors
	// PublisherRestrictions is nil when the core segment ended before the
	// field (lenient decoding only; see Warnings).
	PublisherRestrictions []PubRestriction
	// DisclosedVendors and AllowedVendors are nil when the string has no
	// such segment.
	DisclosedVendors *Vendors
	AllowedVendors   *Vendors
	PublisherTC      *PublisherTC
	// Warnings lists what lenient decoding tolerated.
	Warnings []string
}

// HasPurposeConsent reports whether purpose p (1-24) has consent.
func (t *TCF) HasPurposeConsent(p int) bool {
	return p >= 1 && p <= 24 && t.PurposeConsents>>(p-1)&1 == 1
}

// HasPurposeLI reports whether purpose p (1-24) has legitimate interest.
func (t *TCF) HasPurposeLI(p int) bool {
	return p >= 1 && p <= 24 && t.PurposeLI>>(p-1)&1 == 1
}

// PubRestriction is one publisher restriction: for PurposeID, vendors in
// Vendors are restricted by Type (0 not allowed, 1 require consent, 2
// require legitimate interest). Vendors lists the range entries expanded in
// string order, duplicates kept (iabtcf-es issue 201 strings repeat them).
type PubRestriction struct {
	PurposeID int
	Type      int
	Vendors   []int
}

// PublisherTC is the publisher purposes segment (segment type 3).
type PublisherTC struct {
	PurposeConsents   uint32
	PurposeLI         uint32
	NumCustomPurposes int
	CustomConsents    uint64
	CustomLI          uint64
}

// Vendors is a set of vendor ids with the maximum id the string declared
// and how it was encoded.
type Vendors struct {
	MaxID int
	Range bool
	set   []uint64 // bit id
}

// Has reports whether vendor id is in v.
func (v *Vendors) Has(id int) bool {
	return id >= 0 && id>>6 < len(v.set) && v.set[id>>6]>>(uint(id)&63)&1 == 1
}

// IDs returns the vendor ids in v, ascending, in a new slice.
func (v *Vendors) IDs() []int {
	out := []int{}
	for i, w := range v.set {
		for w != 0 {
			out = append(out, i*64+bits.TrailingZeros64(w))
			w &= w - 1
		}
	}
	return out
}

func (v *Vendors) add(id int) {
	for id>>6 >= len(v.set) {
		v.set = append(v.set, 0)
	}
	v.set[id>>6] |= 1 << (uint(id) & 63)
}

// TCFOptions tunes DecodeTCF.
type TCFOptions struct {
	// Lenient accepts a core segment that ends right after the vendor
	// legitimate-interest section (no NumPubRestrictions; older encoders
	// wrote such strings) and skips the TCF v2.2 policy checks. Both are
	// recorded in Warnings. Default false: strict.
	Lenient bool
}

// DecodeTCF decodes a TC string. Strict decoding (the default) rejects
// strings that are truncated anywhere, that are not version 2, and, for
// TCF policy version 4 or later (TCF v2.2), strings that claim legitimate
// interest for purposes 3, 4, 5 or 6. The returned value owns no memory
// shared with s.
func DecodeTCF(s string, opt TCFOptions) (*TCF, error) {
	var scratch [256]byte
	var r bitReader
	t := &TCF{}
	seg, rest, more := strings.Cut(s, ".")
	b, nbits, err := decodeSegment(scratch[:0], seg)
	if err != nil {
		return nil, err
	}
	r.reset(b, nbits)
	t.Version = r.int(6)
	if r.err == nil && t.Version != 2 {
		return nil, errors.New(ErrTCFVersion.Error() + " (version " + strconv.Itoa(t.Version) + ")")
	}
	t.Created = deci(r.read(36))
	t.LastUpdated = deci(r.read(36))
	t.CmpID = r.int(12)
	t.CmpVersion = r.int(12)
	t.ConsentScreen = r.int(6)
	t.ConsentLanguage = letters(r.int(6), r.int(6))
	t.VendorListVersion = r.int(12)
	t.PolicyVersion = r.int(6)
	t.IsServiceSpecific = r.bool()
	t.UseNonStandardTexts = r.bool()
	t.SpecialFeatureOptIns = uint16(reverse(r.read(12), 12))
	t.PurposeConsents = uint32(reverse(r.read(24), 24))
	t.PurposeLI = uint32(reverse(r.read(24), 24))
	t.PurposeOneTreatment = r.bool()
	t.PublisherCC = letters(r.int(6), r.int(6))
	t.VendorConsents = readVendors(&r)
	t.VendorLI = readVendors(&r)
	if r.err != nil {
		return nil, r.err
	}
	if r.left() < 12 && opt.Lenient {
		t.Warnings = append(t.Warnings, "NumPubRestrictions field missing (truncated core segment); treated as 0")
		t.PublisherRestrictions = []PubRestriction{}
	} else {
		n := r.int(12)
		t.PublisherRestrictions = make([]PubRestriction, 0, min(n, 64))
		for i := 0; i < n && r.err == nil; i++ {
			pr := PubRestriction{PurposeID: r.int(6), Type: r.int(2)}
			pr.Vendors = readRangeList(&r)
			t.PublisherRestrictions = append(t.PublisherRestrictions, pr)
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	for more {
		seg, rest, more = strings.Cut(rest, ".")
		b, nbits, err := decodeSegment(scratch[:0], seg)
		if err != nil {
			return nil, err
		}
		r.reset(b, nbits)
		switch typ := r.int(3); typ {
		case 1, 2:
			v := readVendors(&r)
			if typ == 1 {
				t.DisclosedVendors = &v
			} else {
				t.AllowedVendors = &v
			}
		case 3:
			p := &PublisherTC{
				PurposeConsents: uint32(reverse(r.read(24), 24)),
				PurposeLI:       uint32(reverse(r.read(24), 24)),
			}
			p.NumCustomPurposes = r.int(6)
			p.CustomConsents = reverse(r.read(p.NumCustomPurposes), p.NumCustomPurposes)
			p.CustomLI = reverse(r.read(p.NumCustomPurposes), p.NumCustomPurposes)
			t.PublisherTC = p
		default:
			if r.err == nil {
				return nil, errors.New("iab: unknown TC segment type " + strconv.Itoa(typ))
			}
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	if bad := t.policyViolations(); bad != "" {
		if !opt.Lenient {
			return nil, errors.New(ErrTCFPolicy.Error() + ": legitimate interest not allowed for purposes " + bad)
		}
		t.Warnings = append(t.Warnings, "TCF>=2.2: legitimate interest not allowed for purposes "+bad)
	}
	return t, nil
}

// policyViolations lists, for TCF policy version 4 and later, the purposes
// among 3-6 that claim legitimate interest ("" when none).
func (t *TCF) policyViolations() string {
	if t.PolicyVersion < 4 {
		return ""
	}
	var sb []byte
	for p := 3; p <= 6; p++ {
		if t.HasPurposeLI(p) {
			if len(sb) > 0 {
				sb = append(sb, ',')
			}
			sb = strconv.AppendInt(sb, int64(p), 10)
		}
	}
	return string(sb)
}

// readVendors reads a vendor section: MaxVendorId (16), IsRangeEncoding
// (1), then a bit field of MaxVendorId bits or a range list.
func readVendors(r *bitReader) Vendors {
	v := Vendors{MaxID: r.int(16)}
	v.Range = r.bool()
	if r.err != nil {
		return v
	}
	if !v.Range {
		if r.left() < v.MaxID {
			r.read(v.MaxID) // sets the error
			return v
		}
		v.set = make([]uint64, v.MaxID/64+1)
		for id := 1; id <= v.MaxID; id++ {
			if r.bool() {
				v.set[id>>6] |= 1 << (uint(id) & 63)
			}
		}
		return v
	}
	readRanges(r, &v)
	return v
}

// readRanges reads NumEntries (12) then entries of IsARange (1),
// StartOrOnlyVendorId (16) and, for a range, EndVendorId (16).
func readRanges(r *bitReader, v *Vendors) {
	n := r.int(12)
	for i := 0; i < n && r.err == nil; i++ {
		isRange := r.bool()
		start := r.int(16)
		end := start
		if isRange {
			end = r.int(16)
		}
		if r.err != nil {
			return
		}
		for id := start; id <= end; id++ {
			v.add(id)
		}
	}
}

// readRangeList reads a range section like readRanges, into a list that
// keeps the entries' order and duplicates. At most 1<<16 ids per entry.
func readRangeList(r *bitReader) []int {
	n := r.int(12)
	out := []int{}
	for i := 0; i < n && r.err == nil; i++ {
		isRange := r.bool()
		start := r.int(16)
		end := start
		if isRange {
			end = r.int(16)
		}
		if r.err != nil || end-start > 1<<16 || len(out) > 1<<16 {
			break
		}
		for id := start; id <= end; id++ {
			out = append(out, id)
		}
	}
	return out
}

// reverse turns a field of k bits whose first bit is id 1 into a mask
// whose bit i-1 is id i.
func reverse(v uint64, k int) uint64 {
	if k == 0 {
		return 0
	}
	return bits.Reverse64(v) >> (64 - uint(k))
}

func letters(a, b int) string {
	return string([]byte{byte('A' + a), byte('A' + b)})
}

func deci(v uint64) time.Time {
	return time.UnixMilli(int64(v) * 100).UTC()
}
