package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/cdpstream/cdpstream/engine"
)

// Control records are what a sink can carry besides events: today profile
// merges, so downstream tools can re-key what they hold under the merged
// ids. A sink receives them only when its config lists them in `records`.
// They are JSON objects with a "type" field; on Kafka they also carry the
// header cdp-record-type and are keyed by the survivor's profile id, so they
// land on the partition of that profile's events.
const (
	// RecordMerge: {"type":"merge","survivor":1,"merged":[7,9],
	// "time":"...","message_id":"...","rule":"..."}.
	RecordMerge = "merge"
	// RecordAudience: {"type":"audience","audience":"vip","version":2,
	// "profile_id":7,"entered":true,"time":"...","cause":"event"}.
	RecordAudience = "audience"
	// RecordDeletion: {"type":"deletion","request_id":"...",
	// "profile_ids":[7],"identifiers":[{"type":"email","value":"..."}],
	// "time":"..."}: a person was erased; delete what you hold about them.
	RecordDeletion = "deletion"
	// RecordConsent: {"type":"consent","profile_id":7,"purpose":"analytics",
	// "status":"denied","time":"...","source":"segment"}: a person's
	// consent for a purpose changed (as mParticle's consent notifications).
	RecordConsent = "consent"
	// HeaderRecordType names the control record type on Kafka.
	HeaderRecordType = "cdp-record-type"
)

var recordTypes = []string{RecordMerge, RecordAudience, RecordDeletion, RecordConsent}

// Record is one control record: Type, a Kafka key and the JSON value.
type Record = engine.Record

// RecordWriter is implemented by the sinks that can carry control records.
// WriteRecords returns once the records are durably handed over.
type RecordWriter interface {
	WriteRecords(ctx context.Context, recs []Record) error
}

type mergeJSON struct {
	Type      string    `json:"type"`
	Survivor  uint32    `json:"survivor"`
	Merged    []uint32  `json:"merged"`
	Time      time.Time `json:"time"`
	MessageID string    `json:"message_id,omitempty"`
	Rule      string    `json:"rule,omitempty"`
}

// MergeRecords encodes merges as control records (off the per-event path:
// merges are rare, so encoding/json is fine).
func MergeRecords(merges []engine.Merge) []Record {
	out := make([]Record, 0, len(merges))
	for _, m := range merges {
		v, _ := json.Marshal(mergeJSON{Type: RecordMerge, Survivor: m.Survivor, Merged: m.Merged, Time: m.Time.UTC(), MessageID: m.MessageID, Rule: m.Rule})
		out = append(out, Record{Type: RecordMerge, Key: []byte(strconv.FormatUint(uint64(m.Survivor), 10)), Value: v})
	}
	return out
}

// WriteRecords implements RecordWriter: it produces the records and waits
// for every acknowledgement.
func (s *Kafka) WriteRecords(ctx context.Context, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	rs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		rs[i] = &kgo.Record{Topic: s.topic, Key: r.Key, Value: r.Value,
			Headers: []kgo.RecordHeader{{Key: HeaderRecordType, Value: []byte(r.Type)}}}
	}
	if err := s.cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		return fmt.Errorf("sink %s: %w", s.name, err)
	}
	return nil
}

// WriteRecords implements RecordWriter: one line per record, flushed and,
// with sync on, fsynced.
func (s *NDJSON) WriteRecords(ctx context.Context, recs []Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return errClosed
	}
	if s.err != nil {
		return s.err
	}
	for _, r := range recs {
		writeLine(s.bw, r.Value)
	}
	if err := flushSync("sink", s.name, s.path, s.bw, s.f, s.sync); err != nil {
		s.err = err
		return err
	}
	return nil
}

// WriteRecords implements RecordWriter.
func (s *Stdout) WriteRecords(ctx context.Context, recs []Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	for _, r := range recs {
		writeLine(s.bw, r.Value)
	}
	return s.bw.Flush()
}

// routed wraps a sink with its config's choice of events and control
// records. It implements engine.MergeSink when the sink takes merges.
type routed struct {
	engine.Sink
	events bool
	types  []string
	rw     RecordWriter
}

// WantsRecord implements engine.RecordSink.
func (r *routed) WantsRecord(typ string) bool { return slices.Contains(r.types, typ) }

// WriteRecords implements engine.RecordSink.
func (r *routed) WriteRecords(ctx context.Context, recs []Record) error {
	return r.rw.WriteRecords(ctx, recs)
}

// TakesEvents implements engine.EventTaker.
func (r *routed) TakesEvents() bool { return r.events }

func (r *routed) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	if !r.events {
		return nil
	}
	return r.Sink.Write(ctx, b, sel)
}

// WriteMerges implements engine.MergeSink.
func (r *routed) WriteMerges(ctx context.Context, merges []engine.Merge) error {
	if !r.WantsRecord(RecordMerge) {
		return nil
	}
	return r.rw.WriteRecords(ctx, MergeRecords(merges))
}

// Ping forwards to the wrapped sink when it can ping.
func (r *routed) Ping(ctx context.Context) error {
	if p, ok := r.Sink.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// route applies cfg.Events and cfg.Records: events go to s (possibly a
// minimising wrapper), control records to base.
func route(s, base engine.Sink, cfg Config) (engine.Sink, error) {
	events := cfg.Events == nil || *cfg.Events // Validate: false needs records
	if len(cfg.Records) == 0 {
		return s, nil
	}
	rw, ok := base.(RecordWriter)
	if !ok {
		return nil, fmt.Errorf("records: a %s sink cannot carry control records (use kafka, an ndjson file or stdout)", kindOf(cfg))
	}
	return &routed{Sink: s, events: events, types: cfg.Records, rw: rw}, nil
}

func kindOf(cfg Config) string {
	switch {
	case cfg.Kafka != nil:
		return "kafka"
	case cfg.File != nil:
		return cfg.File.Format + " file"
	}
	return "stdout"
}

type audienceJSON struct {
	Type      string    `json:"type"`
	Audience  string    `json:"audience"`
	Version   uint32    `json:"version"`
	ProfileID uint32    `json:"profile_id"`
	Entered   bool      `json:"entered"`
	Time      time.Time `json:"time"`
	Cause     string    `json:"cause"`
}

// AudienceRecord encodes one audience entry or exit as a control record
// keyed by the profile id. An entry's Subject is the profile (withheld
// once it is erased); an exit has none, so it is always delivered.
func AudienceRecord(aud string, version, profileID uint32, entered bool, at time.Time, cause string) Record {
	v, _ := json.Marshal(audienceJSON{Type: RecordAudience, Audience: aud, Version: version, ProfileID: profileID, Entered: entered, Time: at.UTC(), Cause: cause})
	r := Record{Type: RecordAudience, Key: []byte(strconv.FormatUint(uint64(profileID), 10)), Value: v}
	if entered {
		r.Subject = profileID
	}
	return r
}

// Identifier is one identifier named in a deletion notice.
type Identifier struct {
	Type  string `json:"type"`
	Value string `json:"value"`
	// Format is "sha256" when Value is the hex SHA-256 the sink's events
	// carry instead of the value (its field minimisation hashes it);
	// absent for a plain value.
	Format string `json:"format,omitempty"`
}

type deletionJSON struct {
	Type        string       `json:"type"`
	RequestID   string       `json:"request_id"`
	ProfileIDs  []uint32     `json:"profile_ids"`
	Identifiers []Identifier `json:"identifiers"`
	Time        time.Time    `json:"time"`
}

// DeletionRecord encodes a deletion notice, keyed by the first profile id
// (so it follows the person's events on a keyed topic).
func DeletionRecord(requestID string, pids []uint32, ids []Identifier, at time.Time) Record {
	if ids == nil {
		ids = []Identifier{}
	}
	v, _ := json.Marshal(deletionJSON{Type: RecordDeletion, RequestID: requestID, ProfileIDs: pids, Identifiers: ids, Time: at.UTC()})
	var key []byte
	if len(pids) > 0 {
		key = []byte(strconv.FormatUint(uint64(pids[0]), 10))
	}
	return Record{Type: RecordDeletion, Key: key, Value: v}
}
