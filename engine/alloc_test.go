package engine

import (
	"testing"
)

func TestPoolAllocatorReusesAndZeroes(t *testing.T) {
	p := NewPoolAllocator()
	b := p.Allocate(100)
	if len(b) != 100 || cap(b) != 128 {
		t.Fatalf("len %d cap %d, want 100 and 128", len(b), cap(b))
	}
	for i := range b {
		b[i] = 0xff
	}
	p.Free(b)
	// sync.Pool may drop entries; whatever comes back must be zeroed.
	for i := 0; i < 10; i++ {
		c := p.Allocate(120)
		for j, x := range c {
			if x != 0 {
				t.Fatalf("reused buffer not zeroed at %d", j)
			}
		}
		p.Free(c)
	}
	r := p.Reallocate(50, p.Allocate(10))
	if len(r) != 50 {
		t.Fatalf("Reallocate within class: len %d", len(r))
	}
	r[49] = 1
	g := p.Reallocate(1000, r)
	if len(g) != 1000 || g[49] != 1 || g[999] != 0 {
		t.Fatalf("Reallocate across classes lost data or did not zero")
	}
	p.Free(make([]byte, 100)) // foreign buffer: ignored, no panic
	if big := p.Allocate(0); len(big) != 0 {
		t.Fatal("Allocate(0)")
	}
}

// TestPoolAllocatorGrowWithinClassZeroes: Allocate clears only the bytes
// asked for, so growing within the size class must clear what it exposes,
// even when the whole class was dirtied before the buffer was freed.
func TestPoolAllocatorGrowWithinClassZeroes(t *testing.T) {
	p := NewPoolAllocator()
	for range 20 { // sync.Pool may drop entries; try until one is reused
		b := p.Allocate(100)
		full := b[:cap(b)]
		for i := range full {
			full[i] = 0xff
		}
		p.Free(b)
		c := p.Allocate(70) // the same class (128 bytes)
		g := p.Reallocate(120, c)
		for j, x := range g {
			if x != 0 {
				t.Fatalf("byte %d of a buffer grown within its class is %#x, want 0", j, x)
			}
		}
		p.Free(g)
	}
}
