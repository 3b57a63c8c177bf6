package iab

import (
	"errors"
	"strconv"
)

// ErrShort is wrapped by every error about a string that ends before a
// field it must hold.
var ErrShort = errors.New("iab: string too short")

// bitReader reads big-endian bit fields from the bytes of one
// base64url segment. The first error sticks: later reads return 0, so a
// decoder reads a whole block and checks err once.
type bitReader struct {
	b   []byte
	pos int
	n   int
	err error
}

func (r *bitReader) reset(b []byte, nbits int) {
	r.b, r.pos, r.n, r.err = b, 0, nbits, nil
}

func (r *bitReader) left() int { return r.n - r.pos }

func (r *bitReader) read(k int) uint64 {
	if r.err != nil {
		return 0
	}
	if r.pos+k > r.n {
		r.err = shortErr(k, r.pos, r.n)
		r.pos = r.n
		return 0
	}
	var v uint64
	for i := 0; i < k; i++ {
		p := r.pos + i
		v = v<<1 | uint64(r.b[p>>3]>>(7-uint(p&7))&1)
	}
	r.pos += k
	return v
}

func (r *bitReader) int(k int) int { return int(r.read(k)) }
func (r *bitReader) bool() bool    { return r.read(1) == 1 }

// fib reads one Fibonacci-coded integer (Zeckendorf bits, lowest first,
// terminated by "11"), as the GPP header and range fields use.
func (r *bitReader) fib() int {
	v, prev := 0, false
	a, b := 1, 2
	for i := 0; ; i++ {
		if r.err != nil {
			return 0
		}
		bit := r.bool()
		if r.err != nil {
			return 0
		}
		if bit && prev {
			return v
		}
		if bit {
			v += a
		}
		prev = bit
		a, b = b, a+b
		if i > 40 {
			r.err = errors.New("iab: fibonacci integer too long")
			return 0
		}
	}
}

func shortErr(k, pos, n int) error {
	return errors.New(ErrShort.Error() + ": need " + strconv.Itoa(k) + " bits at " + strconv.Itoa(pos) + ", have " + strconv.Itoa(n))
}

// b64 maps a base64url character (or '+' and '/' of the standard
// alphabet, which some CMPs emit) to its 6 bits, -1 otherwise.
var b64 = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	const alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := 0; i < len(alpha); i++ {
		t[alpha[i]] = int8(i)
	}
	t['+'], t['/'] = 62, 63
	return t
}()

// decodeSegment decodes one base64url segment into dst (reusing it when it
// is large enough) and returns the bytes and the number of bits, 6 per
// character: IAB strings are bit fields, and their last character may carry
// bits of a field that a byte-oriented base64 decoder would drop. Padding
// '=' is ignored.
func decodeSegment(dst []byte, s string) ([]byte, int, error) {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	nbits := len(s) * 6
	need := (nbits + 7) / 8
	if cap(dst) < need {
		dst = make([]byte, need)
	}
	dst = dst[:need]
	clear(dst)
	pos := 0
	for i := 0; i < len(s); i++ {
		v := b64[s[i]]
		if v < 0 {
			return nil, 0, errors.New("iab: bad base64url character at " + strconv.Itoa(i))
		}
		for k := 5; k >= 0; k-- {
			if v>>uint(k)&1 == 1 {
				dst[pos>>3] |= 0x80 >> uint(pos&7)
			}
			pos++
		}
	}
	return dst, nbits, nil
}
