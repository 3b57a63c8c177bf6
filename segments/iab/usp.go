package iab

import "errors"

// ErrUSP is wrapped by every US Privacy string error.
var ErrUSP = errors.New("iab: bad US Privacy string")

// Tri is a yes/no/not-applicable value of the US Privacy string.
type Tri uint8

// Tri values; TriNA stands for '-'.
const (
	TriNA Tri = iota
	TriYes
	TriNo
)

// USP is a decoded IAB US Privacy (CCPA) string, e.g. "1YNN".
type USP struct {
	Version      int
	Notice       Tri
	OptOutOfSale Tri
	LSPACovered  Tri
}

// DecodeUSP decodes a 4-character US Privacy string: a version digit,
// then Y, N or '-' for notice given, opted out of sale and LSPA covered.
// It does not allocate.
func DecodeUSP(s string) (USP, error) {
	if len(s) != 4 || s[0] < '1' || s[0] > '9' {
		return USP{}, ErrUSP
	}
	var u USP
	u.Version = int(s[0] - '0')
	for i, dst := range []*Tri{&u.Notice, &u.OptOutOfSale, &u.LSPACovered} {
		switch s[i+1] {
		case 'Y', 'y':
			*dst = TriYes
		case 'N', 'n':
			*dst = TriNo
		case '-':
			*dst = TriNA
		default:
			return USP{}, ErrUSP
		}
	}
	return u, nil
}

// String encodes u back into its 4-character form.
func (u USP) String() string {
	c := func(t Tri) byte { return "-YN"[t] }
	return string([]byte{byte('0' + u.Version), c(u.Notice), c(u.OptOutOfSale), c(u.LSPACovered)})
}
