package segments

import (
	"math/rand/v2"
	"runtime"

	"github.com/RoaringBitmap/roaring/v2"
)

// BitmapMemory builds the consent bitmaps of n profiles the way a live
// instance holds them (for 4 purposes: granted and denied sets, about 60%
// of profiles granted, 25% denied, the rest unknown, decisions spread
// randomly over dense profile ids), and returns their serialized size and
// the Go heap they occupy, in bytes. The bench harness calls it for 10M
// and 100M profiles.
func BitmapMemory(n int) (serialized, heap uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rng := rand.New(rand.NewPCG(7, uint64(n)))
	var sets [8]*roaring.Bitmap
	for i := range sets {
		sets[i] = roaring.New()
	}
	buf := make([]uint32, 0, 1<<16)
	for p := 0; p < 4; p++ {
		g, d := sets[2*p], sets[2*p+1]
		for lo := 1; lo <= n; lo += 1 << 16 {
			hi := min(lo+1<<16, n+1)
			var gb, db []uint32
			buf = buf[:0]
			for id := lo; id < hi; id++ {
				switch r := rng.IntN(100); {
				case r < 60:
					gb = append(gb, uint32(id))
				case r < 85:
					db = append(db, uint32(id))
				}
			}
			g.AddMany(gb)
			d.AddMany(db)
		}
	}
	for _, s := range sets {
		s.RunOptimize()
		serialized += s.GetSerializedSizeInBytes()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap = after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
	if heap == 0 {
		// Other garbage freed meanwhile hides the sets in the heap
		// difference (as inside the bench harness): use roaring's own
		// in-memory estimate instead.
		for _, s := range sets {
			heap += s.GetSizeInBytes()
		}
	}
	runtime.KeepAlive(sets)
	return serialized, heap
}
