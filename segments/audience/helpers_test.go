package audience

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
)

// fakeConsent is a ConsentView over plain bitmaps.
type fakeConsent struct {
	mu      sync.Mutex
	granted map[string]*roaring.Bitmap
	denied  map[string]*roaring.Bitmap
}

func newFakeConsent(purposes ...string) *fakeConsent {
	c := &fakeConsent{granted: map[string]*roaring.Bitmap{}, denied: map[string]*roaring.Bitmap{}}
	for _, p := range purposes {
		c.granted[p], c.denied[p] = roaring.New(), roaring.New()
	}
	return c
}

func (c *fakeConsent) Granted(p string) *roaring.Bitmap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.granted[p]
}

func (c *fakeConsent) Denied(p string) *roaring.Bitmap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.denied[p]
}

func (c *fakeConsent) Purposes() []string {
	var out []string
	for p := range c.granted {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// set changes pid's state for purpose; copy-on-write so that bitmaps
// handed out earlier never change under a reader.
func (c *fakeConsent) set(pid uint32, purpose, state string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, d := c.granted[purpose].Clone(), c.denied[purpose].Clone()
	g.Remove(pid)
	d.Remove(pid)
	switch state {
	case StateGranted:
		g.Add(pid)
	case StateDenied:
		d.Add(pid)
	}
	c.granted[purpose], c.denied[purpose] = g, d
}

func openDB(t testing.TB) *pebble.DB {
	t.Helper()
	db, err := pebble.Open(t.TempDir(), &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// ev is one event of a test batch.
type ev struct {
	pid  uint32
	typ  engine.EventType
	name string // track event name
	at   time.Time
	raw  string
	off  int64
}

func identify(pid uint32, traits string) ev {
	return ev{pid: pid, typ: engine.TypeIdentify, raw: `{"type":"identify","traits":` + traits + `}`}
}

func track(pid uint32, name string, at time.Time, props string) ev {
	if props == "" {
		props = "{}"
	}
	return ev{pid: pid, typ: engine.TypeTrack, name: name, at: at,
		raw: fmt.Sprintf(`{"type":"track","event":%q,"properties":%s}`, name, props)}
}

// makeBatch builds a batch in engine.Schema as the identity and consent
// stages would leave it: profile ids set, raw JSON riding along.
func makeBatch(seq uint64, evs []ev, now time.Time) *engine.Batch {
	bld := array.NewRecordBuilder(memory.NewGoAllocator(), engine.Schema)
	defer bld.Release()
	for i, e := range evs {
		at := e.at
		if at.IsZero() {
			at = now
		}
		bld.Field(engine.ColMessageID).(*array.StringBuilder).Append(fmt.Sprintf("m%d-%d", seq, i))
		bld.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(e.typ))
		if e.typ == engine.TypeTrack {
			bld.Field(engine.ColEvent).(*array.StringBuilder).Append(e.name)
		} else {
			bld.Field(engine.ColEvent).(*array.StringBuilder).AppendNull()
		}
		bld.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(at.UnixMicro()))
		bld.Field(engine.ColTopic).(*array.StringBuilder).Append("events")
		bld.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
		bld.Field(engine.ColOffset).(*array.Int64Builder).Append(e.off)
		bld.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
		for _, c := range []int{engine.ColUserID, engine.ColAnonymousID, engine.ColPreviousID, engine.ColGroupID} {
			bld.Field(c).(*array.StringBuilder).AppendNull()
		}
		bld.Field(engine.ColIdentifiers).(*array.ListBuilder).Append(true)
		bld.Field(engine.ColProfileID).(*array.Uint32Builder).Append(e.pid)
		bld.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
		bld.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte(e.raw))
		bld.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
	}
	return &engine.Batch{Seq: seq, Rec: bld.NewRecordBatch()}
}

// dumpMembers prints every audience's members, by id.
func dumpMembers(s *Store) string {
	var b strings.Builder
	for _, in := range s.List() {
		ids, _ := s.Members(in.ID, 0, 1<<20, nil)
		fmt.Fprintf(&b, "%s v%d: %v\n", in.ID, in.Version, ids)
	}
	if b.Len() == 0 {
		return "(no audiences)\n"
	}
	return b.String()
}

func fmtChanges(chg []Change) string {
	var b strings.Builder
	for _, c := range chg {
		dir := "exit "
		if c.Entered {
			dir = "enter"
		}
		if c.Cause == "delete" {
			fmt.Fprintf(&b, "delete %s v%d\n", c.Audience, c.Version)
			continue
		}
		fmt.Fprintf(&b, "%s %s v%d profile %d (%s)\n", dir, c.Audience, c.Version, c.ProfileID, c.Cause)
	}
	return b.String()
}
