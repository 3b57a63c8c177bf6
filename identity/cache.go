package identity

// genCache is a bounded map with approximate LRU eviction in two
// generations: entries go into cur; when cur holds its share of the budget
// it becomes prev and a new cur starts; a hit in prev moves the entry to
// cur. Memory stays under about twice the per-generation budget, every
// operation is O(1), and there is no per-entry list to maintain.
//
// It is not safe for concurrent use; Graph guards it with its mutex.
type genCache[K comparable, V any] struct {
	cur, prev         map[K]V
	curBytes, maxHalf int64
	size              func(V) int64
	hits, misses      uint64 // since the last takeStats
}

func newGenCache[K comparable, V any](maxBytes int64, size func(V) int64) *genCache[K, V] {
	return &genCache[K, V]{cur: make(map[K]V), maxHalf: maxBytes / 2, size: size}
}

func (c *genCache[K, V]) get(k K) (V, bool) {
	if v, ok := c.cur[k]; ok {
		c.hits++
		return v, true
	}
	if v, ok := c.prev[k]; ok {
		c.hits++
		c.put(k, v)
		return v, true
	}
	c.misses++
	var zero V
	return zero, false
}

// put stores v under k. A zero budget disables the cache.
func (c *genCache[K, V]) put(k K, v V) {
	if c.maxHalf <= 0 {
		return
	}
	n := c.size(v)
	if c.curBytes+n > c.maxHalf {
		c.prev = c.cur
		c.cur = make(map[K]V, len(c.prev))
		c.curBytes = 0
	}
	c.cur[k] = v
	c.curBytes += n
}

func (c *genCache[K, V]) drop(k K) {
	delete(c.cur, k)
	delete(c.prev, k)
}

func (c *genCache[K, V]) reset() {
	c.cur, c.prev, c.curBytes = make(map[K]V), nil, 0
}

// bytes estimates the memory held.
func (c *genCache[K, V]) bytes() int64 {
	if c.prev == nil {
		return c.curBytes
	}
	return c.curBytes + c.maxHalf
}

func (c *genCache[K, V]) takeStats() (hits, misses uint64) {
	hits, misses = c.hits, c.misses
	c.hits, c.misses = 0, 0
	return hits, misses
}

// identEntryBytes estimates one identifier-cache entry: a 16-byte key, a
// 16-byte value, and the map's slot and control overhead at its load factor.
const identEntryBytes = 48

func identSize(identEntry) int64 { return identEntryBytes }

func profileSize(p *profile) int64 {
	n := int64(120 + 8*len(p.merged) + 4*len(p.apart))
	for i := range p.idents {
		n += 64 + int64(len(p.idents[i].value))
	}
	for _, c := range p.sealed {
		n += 40 + int64(len(c.b))
	}
	return n
}
