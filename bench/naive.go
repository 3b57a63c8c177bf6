package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/cdpstream/cdpstream/engine"
)

// NaiveSource is the baseline the pipeline is measured against: the same
// job as ingest's Batcher (validate, decode the same fields, build the same
// Arrow batch, dead-letter the same rejects) written the obvious way, with
// encoding/json into a map[string]any and time.Parse. It runs through the
// same runner and sinks, so only decoding differs.
type NaiveSource struct {
	c       *Corpus
	n, pos  int
	maxRows int
	rb      *array.RecordBuilder
	rows    int
	dead    []engine.DeadLetter
	created time.Time
}

// NewNaiveSource returns a baseline source of n records from c.
func NewNaiveSource(c *Corpus, n, maxRows int) *NaiveSource {
	return &NaiveSource{c: c, n: n, maxRows: maxRows, rb: array.NewRecordBuilder(memory.DefaultAllocator, engine.Schema)}
}

// Next implements engine.Source.
func (s *NaiveSource) Next(ctx context.Context) (*engine.Batch, error) {
	for s.pos < s.n {
		i := s.pos % len(s.c.Records)
		s.pos++
		if s.created.IsZero() {
			s.created = time.Now()
		}
		s.add(s.c.Records[i], s.c.Keys[i], int64(s.pos-1))
		if s.rows+len(s.dead) >= s.maxRows {
			return s.flush(), nil
		}
	}
	return s.flush(), io.EOF
}

func (s *NaiveSource) flush() *engine.Batch {
	if s.rows+len(s.dead) == 0 {
		return nil
	}
	b := &engine.Batch{Rec: s.rb.NewRecordBatch(), Dead: s.dead, Created: s.created, Flushed: time.Now(),
		Offsets: []engine.Offset{{Topic: "mem", Next: int64(s.pos), Epoch: -1}}}
	s.rows, s.dead, s.created = 0, nil, time.Time{}
	return b
}

func str(m map[string]any, k string) (string, bool) {
	switch v := m[k].(type) {
	case string:
		return v, v != ""
	case float64:
		return fmt.Sprint(v), true
	}
	return "", false
}

func (s *NaiveSource) reject(raw, key []byte, off int64, reason engine.Reason) {
	s.dead = append(s.dead, engine.DeadLetter{Pos: engine.Position{Topic: "mem", Offset: off},
		Raw: append([]byte(nil), raw...), Key: append([]byte(nil), key...), Reason: reason, Time: time.Now()})
}

func (s *NaiveSource) add(raw, key []byte, off int64) {
	if len(raw) > 32<<10 {
		s.reject(raw, key, off, "too_large")
		return
	}
	if !utf8.Valid(raw) {
		s.reject(raw, key, off, "invalid_utf8")
		return
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		s.reject(raw, key, off, "malformed_json")
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		s.reject(raw, key, off, "not_object")
		return
	}
	typ, _ := str(m, "type")
	if typ == "" {
		s.reject(raw, key, off, "missing_type")
		return
	}
	t := engine.ParseEventType([]byte(typ))
	if t == engine.TypeUnknown {
		s.reject(raw, key, off, "unknown_type")
		return
	}
	uid, hasU := str(m, "userId")
	aid, hasA := str(m, "anonymousId")
	pid, hasP := str(m, "previousId")
	gid, hasG := str(m, "groupId")
	ev, hasE := str(m, "event")
	if (t == engine.TypeAlias && !(hasU && hasP)) || (t != engine.TypeAlias && !hasU && !hasA) {
		s.reject(raw, key, off, "missing_identity")
		return
	}
	if t == engine.TypeTrack && !hasE {
		s.reject(raw, key, off, "missing_event")
		return
	}
	if t == engine.TypeGroup && !hasG {
		s.reject(raw, key, off, "missing_group_id")
		return
	}
	var ts time.Time
	for _, f := range []string{"timestamp", "originalTimestamp", "receivedAt"} {
		if x, ok := str(m, f); ok {
			p, err := time.Parse(time.RFC3339Nano, x)
			if err != nil {
				s.reject(raw, key, off, "bad_timestamp")
				return
			}
			if ts.IsZero() {
				ts = p
			}
		}
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	mid, ok := str(m, "messageId")
	if !ok {
		h := sha256.Sum256(raw)
		mid = "cdp-" + hex.EncodeToString(h[:16])
	}
	type ident struct{ t, v string }
	var ids []ident
	get := func(path ...string) (string, bool) {
		cur := m
		for _, p := range path[:len(path)-1] {
			n, ok := cur[p].(map[string]any)
			if !ok {
				return "", false
			}
			cur = n
		}
		return str(cur, path[len(path)-1])
	}
	for _, src := range []struct {
		t     string
		paths [][]string
	}{
		{"email", [][]string{{"traits", "email"}, {"context", "traits", "email"}}},
		{"phone", [][]string{{"traits", "phone"}, {"context", "traits", "phone"}}},
		{"device_id", [][]string{{"context", "device", "id"}}},
		{"advertising_id", [][]string{{"context", "device", "advertisingId"}}},
	} {
		for _, p := range src.paths {
			if v, ok := get(p...); ok {
				ids = append(ids, ident{src.t, v})
			}
		}
	}
	rb := s.rb
	rb.Field(engine.ColMessageID).(*array.StringBuilder).Append(mid)
	rb.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(t))
	appendOpt(rb.Field(engine.ColEvent).(*array.StringBuilder), ev, hasE)
	rb.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(ts.UnixMicro()))
	rb.Field(engine.ColTopic).(*array.StringBuilder).Append("mem")
	rb.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
	rb.Field(engine.ColOffset).(*array.Int64Builder).Append(off)
	rb.Field(engine.ColKey).(*array.BinaryBuilder).Append(key)
	appendOpt(rb.Field(engine.ColUserID).(*array.StringBuilder), uid, hasU)
	appendOpt(rb.Field(engine.ColAnonymousID).(*array.StringBuilder), aid, hasA)
	appendOpt(rb.Field(engine.ColPreviousID).(*array.StringBuilder), pid, hasP)
	appendOpt(rb.Field(engine.ColGroupID).(*array.StringBuilder), gid, hasG)
	lb := rb.Field(engine.ColIdentifiers).(*array.ListBuilder)
	lb.Append(true)
	sb := lb.ValueBuilder().(*array.StructBuilder)
	for _, id := range ids {
		sb.Append(true)
		sb.FieldBuilder(0).(*array.StringBuilder).Append(id.t)
		sb.FieldBuilder(1).(*array.StringBuilder).Append(id.v)
	}
	rb.Field(engine.ColProfileID).(*array.Uint32Builder).Append(0)
	rb.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
	rb.Field(engine.ColRaw).(*array.BinaryBuilder).Append(raw)
	rb.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
	s.rows++
}

func appendOpt(b *array.StringBuilder, v string, ok bool) {
	if ok {
		b.Append(v)
	} else {
		b.AppendNull()
	}
}

// Commit implements engine.Source.
func (s *NaiveSource) Commit(context.Context, []engine.Offset) error { return nil }

// Close implements engine.Source.
func (s *NaiveSource) Close() error { s.rb.Release(); return nil }
