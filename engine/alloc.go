package engine

import (
	"math/bits"
	"sync"
	"unsafe"
)

// PoolAllocator is an Arrow memory.Allocator that recycles buffers through
// one sync.Pool per power-of-two size class. Batches are built and released
// at a steady rate, so with Go's allocator every batch's buffers (about the
// size of its raw input, megabytes per batch) would be garbage that the GC
// must find; recycled, they cost a clear instead.
//
// Safety rests on Arrow's reference counting: a buffer returns to the pool
// only when the last Release of the last array using it runs, so a sink
// that keeps bytes of a record past Write must Retain it (the Kafka sink
// does). Buffers are zeroed before reuse, as fresh Go memory is.
type PoolAllocator struct {
	pools [maxClass + 1]sync.Pool
}

const (
	minClass = 6  // 64 bytes, Arrow's alignment
	maxClass = 30 // 1 GiB; larger buffers are not pooled
)

// NewPoolAllocator returns an empty pool.
func NewPoolAllocator() *PoolAllocator { return &PoolAllocator{} }

func class(size int) int {
	if size <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(size - 1))
}

// Allocate implements memory.Allocator.
func (p *PoolAllocator) Allocate(size int) []byte {
	c := class(size)
	if c > maxClass {
		return make([]byte, size)
	}
	if v := p.pools[c].Get(); v != nil {
		// Only the requested bytes are cleared: Arrow never reads past
		// len (its capacity is len), and Reallocate clears what a growth
		// within the class exposes.
		b := unsafe.Slice((*byte)(v.(unsafe.Pointer)), 1<<c)[:size]
		clear(b)
		return b
	}
	return make([]byte, size, 1<<c)
}

// Reallocate implements memory.Allocator.
func (p *PoolAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		old := len(b)
		b = b[:size]
		if size > old {
			clear(b[old:])
		}
		return b
	}
	nb := p.Allocate(size)
	copy(nb, b)
	p.Free(b)
	return nb
}

// Free implements memory.Allocator. Buffers not from this pool (whose
// capacity is not a size class) are left to the GC.
func (p *PoolAllocator) Free(b []byte) {
	c := cap(b)
	if c < 1<<minClass || c&(c-1) != 0 {
		return
	}
	k := bits.TrailingZeros(uint(c))
	if k > maxClass {
		return
	}
	p.pools[k].Put(unsafe.Pointer(unsafe.SliceData(b[:1])))
}
