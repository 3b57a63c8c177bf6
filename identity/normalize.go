package identity

import (
	"bytes"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// TypePreviousID is not a type of its own: an alias event's previousId is
// resolved as a user_id when that user id is already known, and as an
// anonymous_id otherwise (see doc.go).
const TypePreviousID = "previous_id"

// maxTypes bounds the number of distinct identifier types ever stored; type
// ids are persisted as uint16.
const maxTypes = 1 << 12

// maxValueLen bounds a normalised identifier value. Longer values are not
// identifiers (they are counted as invalid): no real id is that long, and
// profile records stay small.
const maxValueLen = 512

type normFunc func(dst []byte, v string) ([]byte, bool)

var normalisers = map[string]normFunc{
	NormNone:  normNone,
	NormTrim:  normTrim,
	NormLower: normLower,
	NormEmail: normEmail,
	NormPhone: normPhone,
}

// Normalize appends the normalised form of value under the normaliser named
// norm (one of the Norm* constants) to dst. ok is false when the value is
// not a valid identifier of that form (e.g. an email without '@'); dst is
// then returned unchanged. It does not allocate when dst has room, except
// for non-ASCII input to the lower-casing normalisers.
func Normalize(dst []byte, norm, value string) (out []byte, ok bool) {
	f := normalisers[norm]
	if f == nil {
		return dst, false
	}
	return f(dst, value)
}

func normNone(dst []byte, v string) ([]byte, bool) {
	if len(v) > maxValueLen {
		return dst, false
	}
	return append(dst, v...), true
}

func normTrim(dst []byte, v string) ([]byte, bool) {
	v = trimSpace(v)
	if len(v) > maxValueLen {
		return dst, false
	}
	return append(dst, v...), true
}

func normLower(dst []byte, v string) ([]byte, bool) {
	v = trimSpace(v)
	if len(v) > maxValueLen {
		return dst, false
	}
	n := len(dst)
	dst = appendLower(dst, v)
	if len(dst)-n > maxValueLen {
		return dst[:n], false
	}
	return dst, true
}

func normEmail(dst []byte, v string) ([]byte, bool) {
	n := len(dst)
	dst, ok := normLower(dst, v)
	if !ok {
		return dst, false
	}
	e := dst[n:]
	at := bytes.LastIndexByte(e, '@')
	if at <= 0 || at == len(e)-1 {
		return dst[:n], false
	}
	for _, c := range e {
		if c <= ' ' {
			return dst[:n], false
		}
	}
	return dst, true
}

func normPhone(dst []byte, v string) ([]byte, bool) {
	v = trimSpace(v)
	n := len(dst)
	if len(v) > 0 && v[0] == '+' {
		dst = append(dst, '+')
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c >= '0' && c <= '9' {
			dst = append(dst, c)
		}
	}
	if d := len(dst) - n; d == 0 || (d == 1 && dst[n] == '+') || d > 32 {
		return dst[:n], false
	}
	return dst, true
}

func trimSpace(s string) string {
	// ASCII fast path; fall back to Unicode white space.
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\n' || s[0] == '\r') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t' || s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && (s[0] >= utf8.RuneSelf || s[len(s)-1] >= utf8.RuneSelf || isSpaceByte(s[0]) || isSpaceByte(s[len(s)-1])) {
		s = strings.TrimFunc(s, unicode.IsSpace)
	}
	return s
}

func isSpaceByte(c byte) bool { return c == '\v' || c == '\f' || c == 0x85 || c == 0xA0 }

func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			// Unicode: lower-case rune by rune. Invalid bytes become U+FFFD, so
			// the result is valid UTF-8 and normalising it again changes nothing.
			for _, r := range s[i:] {
				dst = utf8.AppendRune(dst, unicode.ToLower(r))
			}
			return trimRightSpaceBytes(dst)
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// trimRightSpaceBytes removes white space that lower-casing may have
// exposed at the end (it never does for valid input; this keeps
// normalisation idempotent for any input).
func trimRightSpaceBytes(b []byte) []byte {
	for len(b) > 0 {
		r, n := utf8.DecodeLastRune(b)
		if !unicode.IsSpace(r) {
			break
		}
		b = b[:len(b)-n]
	}
	return b
}

// matcher reports whether a normalised value is blocked.
type matcher struct {
	exact [][]byte
	res   []*regexp.Regexp
	zeros bool // the default ^[0-]*$, matched without regexp
}

func newMatcher(exact, res []string) (*matcher, error) {
	m := &matcher{}
	for _, e := range exact {
		m.exact = append(m.exact, []byte(e))
	}
	for _, s := range res {
		if s == `^[0-]*$` {
			m.zeros = true
			continue
		}
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, err
		}
		m.res = append(m.res, re)
	}
	return m, nil
}

func (m *matcher) blocked(v []byte) bool {
	for _, e := range m.exact {
		if len(e) == len(v) && bytes.EqualFold(e, v) {
			return true
		}
	}
	if m.zeros && onlyZerosDashes(v) {
		return true
	}
	for _, re := range m.res {
		if re.Match(v) {
			return true
		}
	}
	return false
}

func onlyZerosDashes(v []byte) bool {
	for _, c := range v {
		if c != '0' && c != '-' {
			return false
		}
	}
	return true
}
