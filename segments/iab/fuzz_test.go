package iab

import (
	"reflect"
	"strings"
	"testing"
)

func seedStrings(f *testing.F, pick func(*vectorFile) []string) {
	v := loadVectors(f)
	for _, s := range pick(v) {
		f.Add(s)
	}
}

// FuzzTCF: no panic; strict acceptance implies lenient acceptance of the
// same decode; a strictly accepted v2.2 string never claims LI for
// purposes 3-6; decoding is deterministic.
func FuzzTCF(f *testing.F) {
	seedStrings(f, func(v *vectorFile) (out []string) {
		for _, tc := range v.TCF {
			out = append(out, tc.TC)
		}
		return out
	})
	f.Fuzz(func(t *testing.T, s string) {
		strict, err := DecodeTCF(s, TCFOptions{})
		lenient, lerr := DecodeTCF(s, TCFOptions{Lenient: true})
		if err != nil {
			return
		}
		if lerr != nil {
			t.Fatalf("strict accepted, lenient rejected: %v", lerr)
		}
		if !reflect.DeepEqual(strict, lenient) {
			t.Fatalf("strict and lenient decodes differ")
		}
		if strict.PolicyVersion >= 4 && strict.PurposeLI&0b111100 != 0 {
			t.Fatalf("v2.2 string with LI on purposes 3-6 accepted")
		}
		again, _ := DecodeTCF(s, TCFOptions{})
		if !reflect.DeepEqual(strict, again) {
			t.Fatalf("decode not deterministic")
		}
		for _, id := range strict.VendorConsents.IDs() {
			if !strict.VendorConsents.Has(id) {
				t.Fatalf("IDs lists %d, Has denies it", id)
			}
		}
	})
}

// FuzzGPP: no panic; section ids strictly increase; every section is one
// of the header's ids, in header order; a decoded TCF EU section equals a
// direct decode of its raw string.
func FuzzGPP(f *testing.F) {
	seedStrings(f, func(v *vectorFile) (out []string) {
		for _, tc := range v.GPP {
			out = append(out, tc.GPP)
		}
		for _, tc := range v.GPPInvalid {
			out = append(out, tc.GPP)
		}
		return out
	})
	f.Fuzz(func(t *testing.T, s string) {
		g, err := DecodeGPP(s)
		if err != nil {
			return
		}
		for i := 1; i < len(g.SectionIDs); i++ {
			if g.SectionIDs[i] <= g.SectionIDs[i-1] {
				t.Fatalf("section ids not increasing: %v", g.SectionIDs)
			}
		}
		if len(g.Sections) > len(g.SectionIDs) {
			t.Fatalf("%d sections for %d ids", len(g.Sections), len(g.SectionIDs))
		}
		for i, sec := range g.Sections {
			if sec.ID != g.SectionIDs[i] {
				t.Fatalf("section %d has id %d, header says %d", i, sec.ID, g.SectionIDs[i])
			}
			if strings.Contains(sec.Raw, "~") {
				t.Fatalf("raw section contains '~'")
			}
			if sec.TCF != nil {
				direct, err := DecodeTCF(sec.Raw, TCFOptions{})
				if err != nil || !reflect.DeepEqual(direct, sec.TCF) {
					t.Fatalf("TCF section differs from direct decode (%v)", err)
				}
			}
		}
	})
}

// FuzzUS: no panic; every 2-bit field is in 0..3; array lengths follow the
// section's layout.
func FuzzUS(f *testing.F) {
	seedStrings(f, func(v *vectorFile) (out []string) {
		for _, tc := range v.GPP {
			if _, rest, ok := strings.Cut(tc.GPP, "~"); ok {
				out = append(out, strings.Split(rest, "~")...)
			}
		}
		return out
	})
	f.Fuzz(func(t *testing.T, s string) {
		for id := SectionUSNat; id <= SectionUSCT; id++ {
			u, err := DecodeUS(id, s)
			if err != nil {
				continue
			}
			want := usLayouts[id]
			if id == SectionUSNat && u.Version >= 2 {
				want = usNatV2
			}
			if len(u.SensitiveDataProcessing) != want.sdp || len(u.KnownChildSensitiveDataConsents) != want.kcsd {
				t.Fatalf("section %d: %d sdp, %d kcsd", id, len(u.SensitiveDataProcessing), len(u.KnownChildSensitiveDataConsents))
			}
			for _, v := range append(u.SensitiveDataProcessing, u.SaleOptOut, u.SharingOptOut, u.MspaServiceProviderMode) {
				if v > 3 {
					t.Fatalf("2-bit field holds %d", v)
				}
			}
		}
	})
}

// FuzzUSP: no panic; an accepted string round-trips (upper case).
func FuzzUSP(f *testing.F) {
	seedStrings(f, func(v *vectorFile) (out []string) {
		for _, tc := range v.USP {
			out = append(out, tc.USP)
		}
		return append(out, "1yn-", "", "1---")
	})
	f.Fuzz(func(t *testing.T, s string) {
		u, err := DecodeUSP(s)
		if err != nil {
			return
		}
		if got := u.String(); got != strings.ToUpper(s) {
			t.Fatalf("round trip %q -> %q", s, got)
		}
	})
}
