package iab

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// vectorsPath is the shared file of public IAB test vectors, each with the
// repository, commit and path it was taken from (see its _about).
const vectorsPath = "../../../shared/testdata/consent_vectors.json"

type vectorFile struct {
	TCF []struct {
		ID       string          `json:"id"`
		TC       string          `json:"tc_string"`
		Valid    any             `json:"valid"`
		Decoded  map[string]any  `json:"decoded"`
		Expected json.RawMessage `json:"expected_error_from_source"`
	} `json:"tcf_v2"`
	GPP []struct {
		ID      string         `json:"id"`
		GPP     string         `json:"gpp_string"`
		Decoded map[string]any `json:"decoded"`
	} `json:"gpp"`
	GPPInvalid []struct {
		ID  string `json:"id"`
		GPP string `json:"gpp_string"`
	} `json:"gpp_invalid"`
	USP []struct {
		USP      string         `json:"us_privacy"`
		Expected map[string]any `json:"expected"`
	} `json:"us_privacy"`
}

func loadVectors(t testing.TB) *vectorFile {
	t.Helper()
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Skipf("vectors not available: %v", err)
	}
	var v vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func ids(mask uint64, n int) []any {
	out := []any{}
	for i := 0; i < n; i++ {
		if mask>>i&1 == 1 {
			out = append(out, float64(i+1))
		}
	}
	return out
}

func intsAny(v []int) []any {
	out := []any{}
	for _, x := range v {
		out = append(out, float64(x))
	}
	return out
}

func bytesAny(v []uint8) []any {
	out := []any{}
	for _, x := range v {
		out = append(out, float64(x))
	}
	return out
}

func tsString(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.0Z07:00") }

func vendorsAny(v *Vendors) []any { return intsAny(v.IDs()) }

func encoding(v *Vendors) string {
	if v.Range {
		return "range"
	}
	return "bitfield"
}

// tcfMap renders t with the field names of the vectors' "decoded" objects.
func tcfMap(t *TCF) map[string]any {
	m := map[string]any{
		"version":                      float64(t.Version),
		"created":                      tsString(t.Created),
		"last_updated":                 tsString(t.LastUpdated),
		"cmp_id":                       float64(t.CmpID),
		"cmp_version":                  float64(t.CmpVersion),
		"consent_screen":               float64(t.ConsentScreen),
		"consent_language":             t.ConsentLanguage,
		"vendor_list_version":          float64(t.VendorListVersion),
		"tcf_policy_version":           float64(t.PolicyVersion),
		"is_service_specific":          t.IsServiceSpecific,
		"use_non_standard_texts":       t.UseNonStandardTexts,
		"special_feature_optins":       ids(uint64(t.SpecialFeatureOptIns), 12),
		"purpose_consents":             ids(uint64(t.PurposeConsents), 24),
		"purpose_legitimate_interests": ids(uint64(t.PurposeLI), 24),
		"purpose_one_treatment":        t.PurposeOneTreatment,
		"publisher_cc":                 t.PublisherCC,
		"vendor_consents":              vendorsAny(&t.VendorConsents),
		"vendor_consents_max_id":       float64(t.VendorConsents.MaxID),
		"vendor_consents_encoding":     encoding(&t.VendorConsents),
		"vendor_legitimate_interests":  vendorsAny(&t.VendorLI),
		"vendor_li_max_id":             float64(t.VendorLI.MaxID),
		"vendor_li_encoding":           encoding(&t.VendorLI),
	}
	prs := []any{}
	for _, pr := range t.PublisherRestrictions {
		prs = append(prs, map[string]any{"purpose_id": float64(pr.PurposeID), "restriction_type": float64(pr.Type), "vendors": intsAny(pr.Vendors)})
	}
	m["publisher_restrictions"] = prs
	if t.DisclosedVendors != nil {
		m["disclosed_vendors"] = vendorsAny(t.DisclosedVendors)
	}
	if t.AllowedVendors != nil {
		m["allowed_vendors"] = vendorsAny(t.AllowedVendors)
	}
	if p := t.PublisherTC; p != nil {
		m["publisher_tc"] = map[string]any{
			"purpose_consents":             ids(uint64(p.PurposeConsents), 24),
			"purpose_legitimate_interests": ids(uint64(p.PurposeLI), 24),
			"num_custom_purposes":          float64(p.NumCustomPurposes),
			"custom_consents":              ids(p.CustomConsents, p.NumCustomPurposes),
			"custom_legitimate_interests":  ids(p.CustomLI, p.NumCustomPurposes),
		}
	}
	if len(t.Warnings) > 0 {
		w := []any{}
		for _, s := range t.Warnings {
			w = append(w, s)
		}
		m["warnings"] = w
	}
	return m
}

func diffMaps(t *testing.T, id string, got, want map[string]any) {
	t.Helper()
	for k, w := range want {
		if k == "warnings" || k == "warning" {
			continue
		}
		if g, ok := got[k]; !ok {
			t.Errorf("%s: field %s missing, want %v", id, k, w)
		} else if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: %s = %v, want %v", id, k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && k != "warnings" {
			t.Errorf("%s: unexpected field %s = %v", id, k, got[k])
		}
	}
}

func TestTCFVectors(t *testing.T) {
	v := loadVectors(t)
	var valid, invalid, lenient int
	for _, tc := range v.TCF {
		switch tc.Valid {
		case true:
			valid++
			got, err := DecodeTCF(tc.TC, TCFOptions{})
			if err != nil {
				t.Errorf("%s: %v", tc.ID, err)
				continue
			}
			diffMaps(t, tc.ID, tcfMap(got), tc.Decoded)
		case false:
			invalid++
			if _, err := DecodeTCF(tc.TC, TCFOptions{}); err == nil {
				t.Errorf("%s: accepted a string the vectors reject (%s)", tc.ID, tc.Expected)
			}
			if tc.Decoded != nil {
				// v2.2 policy violations still decode leniently, field by field.
				got, err := DecodeTCF(tc.TC, TCFOptions{Lenient: true})
				if err != nil {
					t.Errorf("%s: lenient: %v", tc.ID, err)
					continue
				}
				if len(got.Warnings) == 0 || !strings.Contains(got.Warnings[len(got.Warnings)-1], "legitimate interest") {
					t.Errorf("%s: lenient decode without a policy warning: %q", tc.ID, got.Warnings)
				}
				diffMaps(t, tc.ID, tcfMap(got), tc.Decoded)
			}
		case "lenient-only":
			lenient++
			if _, err := DecodeTCF(tc.TC, TCFOptions{}); err == nil {
				t.Errorf("%s: strict decode accepted a truncated core segment", tc.ID)
			}
			got, err := DecodeTCF(tc.TC, TCFOptions{Lenient: true})
			if err != nil {
				t.Errorf("%s: lenient: %v", tc.ID, err)
				continue
			}
			if len(got.Warnings) == 0 {
				t.Errorf("%s: lenient decode without warning", tc.ID)
			}
			diffMaps(t, tc.ID, tcfMap(got), tc.Decoded)
		}
	}
	if valid < 30 || invalid < 12 || lenient < 1 {
		t.Fatalf("vectors: %d valid, %d invalid, %d lenient-only; the file shrank?", valid, invalid, lenient)
	}
}

func usMap(u *USSection) map[string]any {
	m := map[string]any{"version": float64(u.Version)}
	l := usLayouts[u.ID]
	if u.ID == SectionUSNat && u.Version >= 2 {
		l = usNatV2
	}
	names := map[usField]string{
		fSharingNotice: "sharing_notice", fSaleOptOutNotice: "sale_opt_out_notice",
		fSharingOptOutNotice: "sharing_opt_out_notice", fTargetedAdvertisingOptOutNotice: "targeted_advertising_opt_out_notice",
		fSensitiveDataProcessingOptOutNotice: "sensitive_data_processing_opt_out_notice",
		fSensitiveDataLimitUseNotice:         "sensitive_data_limit_use_notice", fSaleOptOut: "sale_opt_out",
		fSharingOptOut: "sharing_opt_out", fTargetedAdvertisingOptOut: "targeted_advertising_opt_out",
		fPersonalDataConsents: "personal_data_consents", fMspaCovered: "mspa_covered_transaction",
		fMspaOptOutMode: "mspa_opt_out_option_mode", fMspaSPMode: "mspa_service_provider_mode",
	}
	for _, f := range l.fields {
		switch f {
		case fSDP:
			m["sensitive_data_processing"] = bytesAny(u.SensitiveDataProcessing)
		case fKCSD:
			m["known_child_sensitive_data_consents"] = bytesAny(u.KnownChildSensitiveDataConsents)
		default:
			m[names[f]] = float64(*u.field(f))
		}
	}
	if u.GPCPresent {
		m["gpc"] = u.GPC
	}
	return m
}

func TestGPPVectors(t *testing.T) {
	v := loadVectors(t)
	if len(v.GPP) < 20 {
		t.Fatalf("only %d GPP vectors", len(v.GPP))
	}
	for _, tc := range v.GPP {
		g, err := DecodeGPP(tc.GPP)
		if err != nil {
			t.Errorf("%s: %v", tc.ID, err)
			continue
		}
		hdr := tc.Decoded["header"].(map[string]any)
		if got := float64(g.Type); got != hdr["type"] {
			t.Errorf("%s: type %v", tc.ID, got)
		}
		if got := intsAny(g.SectionIDs); !reflect.DeepEqual(got, hdr["section_ids"]) {
			t.Errorf("%s: section ids %v, want %v", tc.ID, got, hdr["section_ids"])
		}
		_, warn := tc.Decoded["warning"]
		if warn != (len(g.Warnings) > 0) {
			t.Errorf("%s: warnings %q, vector warns %v", tc.ID, g.Warnings, warn)
		}
		secs := tc.Decoded["sections"].(map[string]any)
		if len(secs) != len(g.Sections) {
			t.Errorf("%s: %d sections, want %d", tc.ID, len(g.Sections), len(secs))
		}
		for _, s := range g.Sections {
			want, ok := secs[SectionName(s.ID)].(map[string]any)
			if !ok {
				t.Errorf("%s: unexpected section %d", tc.ID, s.ID)
				continue
			}
			if s.Raw != want["raw"] {
				t.Errorf("%s: section %d raw %q, want %q", tc.ID, s.ID, s.Raw, want["raw"])
			}
			if s.Err != nil {
				t.Errorf("%s: section %s: %v", tc.ID, SectionName(s.ID), s.Err)
				continue
			}
			wd, _ := want["decoded"].(map[string]any)
			switch {
			case s.TCF != nil:
				diffMaps(t, tc.ID+"/"+SectionName(s.ID), tcfMap(s.TCF), wd)
			case s.USP != nil:
				diffMaps(t, tc.ID+"/uspv1", uspMap(*s.USP), wd)
			case s.US != nil:
				if wd == nil {
					continue // vectors keep only the raw string of some states
				}
				if _, ok := wd["warnings"]; ok != (len(s.US.Warnings) > 0) {
					t.Errorf("%s: us warnings %q", tc.ID, s.US.Warnings)
				}
				diffMaps(t, tc.ID+"/"+SectionName(s.ID), usMap(s.US), wd)
			default:
				if wd != nil {
					t.Errorf("%s: section %d not decoded", tc.ID, s.ID)
				}
			}
		}
	}
}

func TestGPPInvalid(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.GPPInvalid {
		g, err := DecodeGPP(tc.GPP)
		switch tc.ID {
		case "pg-bad-header":
			if err == nil {
				t.Errorf("%s: accepted", tc.ID)
			}
		case "pg-truncated-usca":
			if err != nil {
				t.Errorf("%s: header rejected: %v", tc.ID, err)
			} else if s := g.Section(SectionUSCA); s == nil || s.Err == nil {
				t.Errorf("%s: truncated usca section accepted", tc.ID)
			}
		default:
			t.Errorf("unknown invalid vector %s", tc.ID)
		}
	}
}

func triAny(t Tri) any {
	switch t {
	case TriYes:
		return true
	case TriNo:
		return false
	}
	return nil
}

func uspMap(u USP) map[string]any {
	return map[string]any{"version": float64(u.Version), "notice_given": triAny(u.Notice),
		"opted_out_of_sale": triAny(u.OptOutOfSale), "lspa_covered": triAny(u.LSPACovered)}
}

func TestUSPVectors(t *testing.T) {
	v := loadVectors(t)
	for _, tc := range v.USP {
		u, err := DecodeUSP(tc.USP)
		if err != nil {
			t.Errorf("%s: %v", tc.USP, err)
			continue
		}
		diffMaps(t, tc.USP, uspMap(u), tc.Expected)
		if u.String() != tc.USP {
			t.Errorf("%s: round trip %s", tc.USP, u.String())
		}
	}
	for _, bad := range []string{"", "1YN", "1YNNN", "0YNN", "1XNN", "AYNN"} {
		if _, err := DecodeUSP(bad); err == nil {
			t.Errorf("DecodeUSP(%q) accepted", bad)
		}
	}
}
