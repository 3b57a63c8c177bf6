package segments

import "math/bits"

func tz(b uint64) int { return bits.TrailingZeros64(b) }
