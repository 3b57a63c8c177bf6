package privacy

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cockroachdb/pebble"
	"github.com/prometheus/client_golang/prometheus"
)

// Key families of the audit trail (see doc.go).
const (
	prefixAudit     byte = 0x30 // 0x30 | seq (8 BE) → encoded entry | entry hash
	prefixAuditHead byte = 0x32 // 0x32 → seq (8 BE) | hash of the last entry
)

const auditVersion byte = 1

// ErrAuditBroken is wrapped by every error Verify returns for a chain that
// does not verify; errors.As with *VerifyError gives the seq.
var ErrAuditBroken = errors.New("privacy: audit chain broken")

// VerifyError reports the first entry at which the chain fails.
type VerifyError struct {
	Seq    uint64
	Reason string
}

func (e *VerifyError) Error() string {
	return "privacy: audit chain broken at seq " + strconv.FormatUint(e.Seq, 10) + ": " + e.Reason
}

// Is makes errors.Is(err, ErrAuditBroken) hold.
func (e *VerifyError) Is(target error) bool { return target == ErrAuditBroken }

// Record is what a caller appends. Target is hashed by Append with the
// trail's key, so no plain value reaches the trail whatever the caller
// passes; pass what identifies the object (a request id, a profile id).
type Record struct {
	Time    time.Time // zero: the trail's clock
	Actor   string    // token id, "processor" for the request processor
	Action  string    // e.g. "POST /opendsr/requests", "request.in_progress"
	Target  string    // hashed before it is stored; empty stays empty
	Outcome string    // HTTP status, "ok", or an error class
}

// Entry is one stored audit entry.
type Entry struct {
	Seq     uint64
	Prev    [sha256.Size]byte // Hash of entry Seq-1; zero for seq 1
	Time    time.Time
	Actor   string
	Action  string
	Target  string // hex keyed hash (TargetHash) or empty
	Outcome string
	Hash    [sha256.Size]byte // SHA-256 of the canonical encoding of the fields above
}

// encode appends the canonical encoding of every field but Hash:
// version | seq (8 BE) | prev (32) | time (unix ns, 8 BE) | then actor,
// action, target, outcome, each as uvarint length | bytes.
func (e *Entry) encode(dst []byte) []byte {
	dst = append(dst, auditVersion)
	dst = binary.BigEndian.AppendUint64(dst, e.Seq)
	dst = append(dst, e.Prev[:]...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Time.UnixNano()))
	for _, s := range [...]string{e.Actor, e.Action, e.Target, e.Outcome} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func decodeEntry(v []byte) (Entry, []byte, error) {
	var e Entry
	bad := errors.New("undecodable entry")
	if len(v) < 1+8+32+8+sha256.Size || v[0] != auditVersion {
		return e, nil, bad
	}
	body := v[:len(v)-sha256.Size]
	copy(e.Hash[:], v[len(v)-sha256.Size:])
	p := body[1:]
	e.Seq = binary.BigEndian.Uint64(p)
	copy(e.Prev[:], p[8:40])
	e.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p[40:48]))).UTC()
	p = p[48:]
	var fs [4]string
	for i := range fs {
		n, k := binary.Uvarint(p)
		if k <= 0 || uint64(len(p)-k) < n {
			return e, nil, bad
		}
		fs[i] = string(p[k : k+int(n)])
		p = p[k+int(n):]
	}
	if len(p) != 0 {
		return e, nil, bad
	}
	e.Actor, e.Action, e.Target, e.Outcome = fs[0], fs[1], fs[2], fs[3]
	return e, body, nil
}

func auditKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixAudit}, seq)
}

// Audit is the hash-chained, append-only audit trail in Pebble. It
// implements engine.Auditor, so the HTTP auth middleware writes every call
// to a personal route into it. Safe for concurrent use: appends are
// serialised, each commits synced before the next starts.
type Audit struct {
	db     *pebble.DB
	key    []byte
	now    func() time.Time
	mirror func(Entry)
	log    *slog.Logger

	mu   sync.Mutex
	seq  uint64
	head [sha256.Size]byte

	appended prometheus.Counter
	failed   prometheus.Counter
}

// AuditOption tunes NewAudit.
type AuditOption func(*Audit)

// WithMirror calls fn with every entry after it committed, in seq order,
// under the trail's lock (so fn should be quick: a Kafka producer's
// asynchronous Produce). Default: none.
func WithMirror(fn func(Entry)) AuditOption { return func(a *Audit) { a.mirror = fn } }

// WithAuditClock sets the clock of entries whose Record has no time.
func WithAuditClock(now func() time.Time) AuditOption { return func(a *Audit) { a.now = now } }

// WithAuditLogger sets where Audit (the engine.Auditor method) reports a
// failed append, its only way to report one. Default: discarded.
func WithAuditLogger(l *slog.Logger) AuditOption { return func(a *Audit) { a.log = l } }

// WithAuditRegisterer registers cdp_privacy_audit_entries_total and
// cdp_privacy_audit_errors_total on reg.
func WithAuditRegisterer(reg prometheus.Registerer) AuditOption {
	return func(a *Audit) {
		if reg != nil {
			reg.MustRegister(a.appended, a.failed)
		}
	}
}

// NewAudit opens the trail in db (which the caller owns and closes after
// the trail's last use). key is the HMAC key of targets (at least 16
// bytes; keep it with the identity secret, not in the store). It reads
// the head and checks that the last entry matches it.
func NewAudit(db *pebble.DB, key []byte, opts ...AuditOption) (*Audit, error) {
	if len(key) < 16 {
		return nil, errors.New("privacy: audit key: must be at least 16 bytes")
	}
	a := &Audit{db: db, key: append([]byte(nil), key...), now: time.Now,
		log: slog.New(slog.DiscardHandler),
		appended: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_privacy_audit_entries_total",
			Help: "Entries appended to the audit trail."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "cdp_privacy_audit_errors_total",
			Help: "Audit appends that failed (the API call was served; the failure is logged)."}),
	}
	for _, o := range opts {
		o(a)
	}
	seq, h, err := readHead(db)
	if err != nil {
		return nil, err
	}
	a.seq, a.head = seq, h
	return a, nil
}

func readHead(db *pebble.DB) (uint64, [sha256.Size]byte, error) {
	var h [sha256.Size]byte
	v, closer, err := db.Get([]byte{prefixAuditHead})
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, h, nil
	}
	if err != nil {
		return 0, h, fmt.Errorf("cannot read the audit head: %w", err)
	}
	defer closer.Close()
	if len(v) != 8+sha256.Size {
		return 0, h, &VerifyError{Reason: "corrupt head"}
	}
	copy(h[:], v[8:])
	return binary.BigEndian.Uint64(v), h, nil
}

// TargetHash returns the keyed hash Append stores for target: 32 hex
// digits of HMAC-SHA256(key, target). Use it to find a target's entries.
func (a *Audit) TargetHash(target string) string {
	if target == "" {
		return ""
	}
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte("audit-target\x00"))
	m.Write([]byte(target))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Append adds one entry, synced, and returns it.
func (a *Audit) Append(r Record) (Entry, error) {
	var out Entry
	err := a.commit(nil, nil, func(es []Entry) { out = es[0] }, r)
	return out, err
}

// batchFate learns whether a batch committed (an *engine.Keyring, whose
// keys fill may stage). It is told before the batch is closed: a closed
// batch goes back to Pebble's pool, and the keyring knows batches by
// pointer.
type batchFate interface {
	Committed(*pebble.Batch)
	Abandon(*pebble.Batch)
}

// commit writes the entries of rs and whatever fill stages into one synced
// Pebble batch, so a state change and its audit entries are atomic. fate
// (nil: none) is told whether the batch committed; done sees the entries
// after the commit.
func (a *Audit) commit(fill func(b *pebble.Batch) error, fate batchFate, done func([]Entry), rs ...Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.db.NewBatch()
	defer b.Close()
	if fate != nil {
		defer fate.Abandon(b) // a no-op after Committed; runs before Close
	}
	if fill != nil {
		if err := fill(b); err != nil {
			return err
		}
	}
	seq, prev := a.seq, a.head
	es := make([]Entry, 0, len(rs))
	var enc []byte
	for _, r := range rs {
		t := r.Time
		if t.IsZero() {
			t = a.now()
		}
		seq++
		e := Entry{Seq: seq, Prev: prev, Time: t.UTC(), Actor: r.Actor, Action: r.Action,
			Target: a.TargetHash(r.Target), Outcome: r.Outcome}
		enc = e.encode(enc[:0])
		e.Hash = sha256.Sum256(enc)
		enc = append(enc, e.Hash[:]...)
		if err := b.Set(auditKey(seq), enc, nil); err != nil {
			return fmt.Errorf("cannot stage audit entry: %w", err)
		}
		prev = e.Hash
		es = append(es, e)
	}
	if len(rs) > 0 {
		head := binary.BigEndian.AppendUint64(nil, seq)
		if err := b.Set([]byte{prefixAuditHead}, append(head, prev[:]...), nil); err != nil {
			return fmt.Errorf("cannot stage audit head: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		a.failed.Add(float64(len(rs)))
		return fmt.Errorf("cannot commit audit entries: %w", err)
	}
	if fate != nil {
		fate.Committed(b)
	}
	a.seq, a.head = seq, prev
	a.appended.Add(float64(len(rs)))
	if a.mirror != nil {
		for _, e := range es {
			a.mirror(e)
		}
	}
	if done != nil {
		done(es)
	}
	return nil
}

// Audit implements engine.Auditor: the entry's route pattern becomes the
// action, its status the outcome, its target is hashed.
func (a *Audit) Audit(_ context.Context, e engine.Entry) {
	_, err := a.Append(Record{Time: e.Time, Actor: e.TokenID, Action: e.Action, Target: e.Target,
		Outcome: strconv.Itoa(e.Outcome)})
	if err != nil {
		a.log.Error("audit append failed", "action", e.Action, "err", err)
	}
}

var _ engine.Auditor = (*Audit)(nil)

// Entries returns the entries with seq in [from, to] (to 0: to the end).
func Entries(db *pebble.DB, from, to uint64) ([]Entry, error) {
	hi := []byte{prefixAudit + 1}
	if to > 0 {
		hi = auditKey(to + 1)
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: auditKey(from), UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("cannot read the audit trail: %w", err)
	}
	defer it.Close()
	var out []Entry
	for it.First(); it.Valid(); it.Next() {
		e, _, err := decodeEntry(it.Value())
		if err != nil {
			return nil, &VerifyError{Seq: binary.BigEndian.Uint64(it.Key()[1:]), Reason: err.Error()}
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// Verify walks the whole chain and returns nil when it is intact, else a
// *VerifyError (wrapping ErrAuditBroken) naming the first bad seq. It
// detects an altered entry (its hash no longer matches), a removed one
// (a gap in seq, or a prev hash that does not match, or a head that
// names a later or different last entry), and reordered ones (an entry
// stored under another seq than its own, or a broken prev link).
func Verify(db *pebble.DB) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAudit}, UpperBound: []byte{prefixAudit + 1}})
	if err != nil {
		return fmt.Errorf("cannot read the audit trail: %w", err)
	}
	defer it.Close()
	var want uint64 = 1
	var prev [sha256.Size]byte
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 9 {
			return &VerifyError{Seq: want, Reason: "foreign key in the audit family"}
		}
		kseq := binary.BigEndian.Uint64(k[1:])
		if kseq != want {
			return &VerifyError{Seq: want, Reason: fmt.Sprintf("missing entry (next stored is %d)", kseq)}
		}
		e, body, err := decodeEntry(it.Value())
		if err != nil {
			return &VerifyError{Seq: kseq, Reason: err.Error()}
		}
		if e.Seq != kseq {
			return &VerifyError{Seq: kseq, Reason: fmt.Sprintf("entry %d stored at seq %d", e.Seq, kseq)}
		}
		if sum := sha256.Sum256(body); !bytes.Equal(sum[:], e.Hash[:]) {
			return &VerifyError{Seq: kseq, Reason: "hash does not match the entry"}
		}
		if e.Prev != prev {
			return &VerifyError{Seq: kseq, Reason: "previous hash does not match entry " + strconv.FormatUint(kseq-1, 10)}
		}
		prev = e.Hash
		want++
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("cannot read the audit trail: %w", err)
	}
	seq, h, err := readHead(db)
	if err != nil {
		return err
	}
	if seq != want-1 {
		return &VerifyError{Seq: want, Reason: fmt.Sprintf("head names seq %d, chain ends at %d", seq, want-1)}
	}
	if h != prev {
		return &VerifyError{Seq: seq, Reason: "head hash does not match the last entry"}
	}
	return nil
}
