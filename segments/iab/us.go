package iab

import (
	"errors"
	"strconv"
	"strings"
)

// USSection is a decoded GPP US section: the national section (usnat) or a
// state section (usca, usva, usco, usut, usct). Every field holds the raw
// 2-bit MSPA value; a field the section does not have stays 0, which the
// specification defines as "not applicable" for every field:
//
//	notices   0 N/A, 1 provided, 2 not provided
//	opt-outs  0 N/A, 1 opted out, 2 did not opt out
//	consents  0 N/A, 1 no consent, 2 consent
//	MSPA mode flags 0 N/A, 1 yes, 2 no
type USSection struct {
	ID                                  int
	Version                             int
	SharingNotice                       uint8
	SaleOptOutNotice                    uint8
	SharingOptOutNotice                 uint8
	TargetedAdvertisingOptOutNotice     uint8
	SensitiveDataProcessingOptOutNotice uint8
	SensitiveDataLimitUseNotice         uint8
	SaleOptOut                          uint8
	SharingOptOut                       uint8
	TargetedAdvertisingOptOut           uint8
	SensitiveDataProcessing             []uint8
	KnownChildSensitiveDataConsents     []uint8
	PersonalDataConsents                uint8
	MspaCoveredTransaction              uint8
	MspaOptOutOptionMode                uint8
	MspaServiceProviderMode             uint8
	// GPC is the Global Privacy Control signal of the optional GPC
	// sub-section; GPCPresent tells whether the string carried it.
	GPC, GPCPresent bool
	// Warnings lists what decoding tolerated.
	Warnings []string
}

// MSPA 2-bit values of opt-out fields.
const (
	OptOutNA     = 0
	OptedOut     = 1
	DidNotOptOut = 2
)

type usField uint8

const (
	fSharingNotice usField = iota
	fSaleOptOutNotice
	fSharingOptOutNotice
	fTargetedAdvertisingOptOutNotice
	fSensitiveDataProcessingOptOutNotice
	fSensitiveDataLimitUseNotice
	fSaleOptOut
	fSharingOptOut
	fTargetedAdvertisingOptOut
	fSDP  // n × 2 bits
	fKCSD // n × 2 bits
	fPersonalDataConsents
	fMspaCovered
	fMspaOptOutMode
	fMspaSPMode
)

type usLayout struct {
	fields    []usField
	sdp, kcsd int
}

var (
	usNatV1 = usLayout{fields: []usField{fSharingNotice, fSaleOptOutNotice, fSharingOptOutNotice,
		fTargetedAdvertisingOptOutNotice, fSensitiveDataProcessingOptOutNotice, fSensitiveDataLimitUseNotice,
		fSaleOptOut, fSharingOptOut, fTargetedAdvertisingOptOut, fSDP, fKCSD, fPersonalDataConsents,
		fMspaCovered, fMspaOptOutMode, fMspaSPMode}, sdp: 12, kcsd: 2}
	usNatV2 = usLayout{fields: usNatV1.fields, sdp: 16, kcsd: 3}
	// usLayouts holds the version-1 layouts of the sections, from the
	// IAB GPP specification (section ids 7-12).
	usLayouts = map[int]usLayout{
		SectionUSNat: usNatV1,
		SectionUSCA: {fields: []usField{fSaleOptOutNotice, fSharingOptOutNotice, fSensitiveDataLimitUseNotice,
			fSaleOptOut, fSharingOptOut, fSDP, fKCSD, fPersonalDataConsents, fMspaCovered, fMspaOptOutMode,
			fMspaSPMode}, sdp: 9, kcsd: 2},
		SectionUSVA: {fields: []usField{fSharingNotice, fSaleOptOutNotice, fTargetedAdvertisingOptOutNotice,
			fSaleOptOut, fTargetedAdvertisingOptOut, fSDP, fKCSD, fMspaCovered, fMspaOptOutMode, fMspaSPMode},
			sdp: 8, kcsd: 1},
		SectionUSCO: {fields: []usField{fSharingNotice, fSaleOptOutNotice, fTargetedAdvertisingOptOutNotice,
			fSaleOptOut, fTargetedAdvertisingOptOut, fSDP, fKCSD, fMspaCovered, fMspaOptOutMode, fMspaSPMode},
			sdp: 7, kcsd: 1},
		SectionUSUT: {fields: []usField{fSharingNotice, fSaleOptOutNotice, fTargetedAdvertisingOptOutNotice,
			fSensitiveDataProcessingOptOutNotice, fSaleOptOut, fTargetedAdvertisingOptOut, fSDP, fKCSD,
			fMspaCovered, fMspaOptOutMode, fMspaSPMode}, sdp: 8, kcsd: 1},
		SectionUSCT: {fields: []usField{fSharingNotice, fSaleOptOutNotice, fTargetedAdvertisingOptOutNotice,
			fSaleOptOut, fTargetedAdvertisingOptOut, fSDP, fKCSD, fMspaCovered, fMspaOptOutMode, fMspaSPMode},
			sdp: 8, kcsd: 3},
	}
)

// DecodeUS decodes the GPP US section id (7-12) from its string: the core
// segment and the optional GPC sub-section after a '.'.
func DecodeUS(id int, s string) (*USSection, error) {
	if _, ok := usLayouts[id]; !ok {
		return nil, errors.New("iab: no decoder for GPP section " + strconv.Itoa(id))
	}
	return decodeUS(id, s)
}

func decodeUS(id int, s string) (*USSection, error) {
	var scratch [32]byte
	core, sub, hasSub := strings.Cut(s, ".")
	b, nbits, err := decodeSegment(scratch[:0], core)
	if err != nil {
		return nil, err
	}
	var r bitReader
	r.reset(b, nbits)
	u := &USSection{ID: id, Version: r.int(6)}
	l := usLayouts[id]
	widened := false
	if id == SectionUSNat && u.Version >= 2 {
		l = usNatV2
		// iabgpp-es widens a v2 header over v1 field widths (a 66-bit
		// core, as encoders before the 16-field release wrote), so do we.
		if r.n == 66 {
			u.Warnings = append(u.Warnings, "v2 header with v1 field widths; widened per iabgpp-es UsNatCoreSegment.decodeSegment")
			l, widened = usNatV1, true
		}
	}
	for _, f := range l.fields {
		switch f {
		case fSDP:
			u.SensitiveDataProcessing = readN(&r, l.sdp)
		case fKCSD:
			u.KnownChildSensitiveDataConsents = readN(&r, l.kcsd)
		default:
			*u.field(f) = uint8(r.read(2))
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if widened {
		for len(u.SensitiveDataProcessing) < 16 {
			u.SensitiveDataProcessing = append(u.SensitiveDataProcessing, 0)
		}
		for len(u.KnownChildSensitiveDataConsents) < 3 {
			u.KnownChildSensitiveDataConsents = append(u.KnownChildSensitiveDataConsents, 0)
		}
	}
	for hasSub {
		var seg string
		seg, sub, hasSub = strings.Cut(sub, ".")
		b, nbits, err := decodeSegment(scratch[:0], seg)
		if err != nil {
			return nil, err
		}
		r.reset(b, nbits)
		if typ := r.int(2); typ == 1 {
			u.GPC, u.GPCPresent = r.bool(), true
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	return u, nil
}

func readN(r *bitReader, n int) []uint8 {
	out := make([]uint8, n)
	for i := range out {
		out[i] = uint8(r.read(2))
	}
	return out
}

func (u *USSection) field(f usField) *uint8 {
	switch f {
	case fSharingNotice:
		return &u.SharingNotice
	case fSaleOptOutNotice:
		return &u.SaleOptOutNotice
	case fSharingOptOutNotice:
		return &u.SharingOptOutNotice
	case fTargetedAdvertisingOptOutNotice:
		return &u.TargetedAdvertisingOptOutNotice
	case fSensitiveDataProcessingOptOutNotice:
		return &u.SensitiveDataProcessingOptOutNotice
	case fSensitiveDataLimitUseNotice:
		return &u.SensitiveDataLimitUseNotice
	case fSaleOptOut:
		return &u.SaleOptOut
	case fSharingOptOut:
		return &u.SharingOptOut
	case fTargetedAdvertisingOptOut:
		return &u.TargetedAdvertisingOptOut
	case fPersonalDataConsents:
		return &u.PersonalDataConsents
	case fMspaCovered:
		return &u.MspaCoveredTransaction
	case fMspaOptOutMode:
		return &u.MspaOptOutOptionMode
	default:
		return &u.MspaServiceProviderMode
	}
}
