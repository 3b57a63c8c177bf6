package privacy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// entryJSON is an audit entry as the mirror publishes it: every field,
// hashes in hex, the time in RFC 3339 with nanoseconds (exact, so a
// consumer can recompute the hash).
type entryJSON struct {
	Seq     uint64 `json:"seq"`
	Prev    string `json:"prev"`
	Time    string `json:"time"`
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Target  string `json:"target"`
	Outcome string `json:"outcome"`
	Hash    string `json:"hash"`
}

// MarshalJSON encodes e with its hashes in hex, as WithMirror consumers
// (cmd/cdpstream's audit.kafka topic) receive it. The target is already a
// keyed hash: no personal data.
func (e Entry) MarshalJSON() ([]byte, error) {
	return json.Marshal(entryJSON{Seq: e.Seq, Prev: hex.EncodeToString(e.Prev[:]), Time: e.Time.UTC().Format(time.RFC3339Nano),
		Actor: e.Actor, Action: e.Action, Target: e.Target, Outcome: e.Outcome, Hash: hex.EncodeToString(e.Hash[:])})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return fmt.Errorf("audit entry time: %w", err)
	}
	*e = Entry{Seq: j.Seq, Time: t, Actor: j.Actor, Action: j.Action, Target: j.Target, Outcome: j.Outcome}
	for _, h := range []struct {
		dst *[sha256.Size]byte
		s   string
	}{{&e.Prev, j.Prev}, {&e.Hash, j.Hash}} {
		if n, err := hex.Decode(h.dst[:], []byte(h.s)); err != nil || n != sha256.Size {
			return fmt.Errorf("audit entry %d: a hash is not %d bytes of hex", j.Seq, sha256.Size)
		}
	}
	return nil
}

// CheckChain verifies a run of consecutive entries as a mirror delivers
// them: each hash matches its entry, each links to the one before, and
// the seqs follow each other. The first entry's prev is trusted unless it
// is seq 1 (whose prev must be zero). It is Verify for a copy of the trail
// outside the store.
func CheckChain(es []Entry) error {
	for i := range es {
		e := &es[i]
		if sum := sha256.Sum256(e.encode(nil)); sum != e.Hash {
			return &VerifyError{Seq: e.Seq, Reason: "hash does not match the entry"}
		}
		switch {
		case i == 0 && e.Seq == 1 && e.Prev != [sha256.Size]byte{}:
			return &VerifyError{Seq: 1, Reason: "the first entry has a previous hash"}
		case i > 0 && e.Seq != es[i-1].Seq+1:
			return &VerifyError{Seq: es[i-1].Seq + 1, Reason: fmt.Sprintf("missing entry (next is %d)", e.Seq)}
		case i > 0 && e.Prev != es[i-1].Hash:
			return &VerifyError{Seq: e.Seq, Reason: fmt.Sprintf("previous hash does not match entry %d", es[i-1].Seq)}
		}
	}
	return nil
}
