package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/cdpstream/cdpstream/engine"
	"github.com/cdpstream/cdpstream/identity"
	"github.com/cdpstream/cdpstream/privacy"
	"github.com/cdpstream/cdpstream/segments"
)

func TestIdentityRef(t *testing.T) {
	sum := sha256.Sum256([]byte("jane@example.com"))
	for _, c := range []struct {
		id   privacy.Identity
		want identity.Ref
		err  string
	}{
		{privacy.Identity{Type: "email", Value: " Jane@Example.com", Format: "raw"}, identity.Ref{Type: "email", Value: " Jane@Example.com"}, ""},
		{privacy.Identity{Type: "email", Value: hex.EncodeToString(sum[:]), Format: "sha256"}, identity.Ref{Type: "email", SHA256: sum, Hashed: true}, ""},
		{privacy.Identity{Type: "ios_vendor_id", Value: hex.EncodeToString(sum[:]), Format: "sha256"}, identity.Ref{Type: "device_id", SHA256: sum, Hashed: true}, ""},
		{privacy.Identity{Type: "email", Value: hex.EncodeToString(sum[:31]), Format: "sha256"}, identity.Ref{}, "not 64 hex digits"},
		{privacy.Identity{Type: "email", Value: strings.Repeat("z", 64), Format: "sha256"}, identity.Ref{}, "not 64 hex digits"},
		{privacy.Identity{Type: "email", Value: "x", Format: "md5"}, identity.Ref{}, "not supported"},
		{privacy.Identity{Type: "fax", Value: "x", Format: "raw"}, identity.Ref{}, "no identifier type"},
	} {
		got, err := identityRef(c.id)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%+v: err %v, want %q", c.id, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%+v: %+v, %v; want %+v", c.id, got, err, c.want)
		}
	}
}

// TestConsentEraserInFlight: erase-and-suppress on a profile whose events
// identity resolved before the request: the consent suppression drops them
// until consentEraser lifts it, and from then on the erased set does
// (reason erased), so no sink with a consent block gets one at any step.
func TestConsentEraserInFlight(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := segments.New(segments.Config{Purposes: []segments.Purpose{
		{Name: "analytics", Bit: 0, Default: "granted", Segment: []string{"Analytics"}}}}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := segments.NewPolicy(segments.PolicyConfig{Name: "out"}, c) // no purpose: drops only suppressed and erased
	if err != nil {
		t.Fatal(err)
	}
	const victim, other = 5, 6
	batch := func(seq uint64) *engine.Batch {
		bld := array.NewRecordBuilder(memory.NewGoAllocator(), engine.Schema)
		defer bld.Release()
		for i, pid := range []uint32{victim, other} {
			bld.Field(engine.ColMessageID).(*array.StringBuilder).Append(fmt.Sprintf("m%d-%d", seq, i))
			bld.Field(engine.ColType).(*array.Uint8Builder).Append(uint8(engine.TypeTrack))
			bld.Field(engine.ColEvent).(*array.StringBuilder).Append("e")
			bld.Field(engine.ColTimestamp).(*array.TimestampBuilder).Append(arrow.Timestamp(time.Unix(1000, 0).UnixMicro()))
			bld.Field(engine.ColTopic).(*array.StringBuilder).Append("t")
			bld.Field(engine.ColPartition).(*array.Int32Builder).Append(0)
			bld.Field(engine.ColOffset).(*array.Int64Builder).Append(int64(i))
			bld.Field(engine.ColKey).(*array.BinaryBuilder).AppendNull()
			for _, col := range []int{engine.ColUserID, engine.ColAnonymousID, engine.ColPreviousID, engine.ColGroupID} {
				bld.Field(col).(*array.StringBuilder).AppendNull()
			}
			bld.Field(engine.ColIdentifiers).(*array.ListBuilder).Append(true)
			bld.Field(engine.ColProfileID).(*array.Uint32Builder).Append(pid)
			bld.Field(engine.ColConsentMask).(*array.Uint64Builder).Append(0)
			bld.Field(engine.ColRaw).(*array.BinaryBuilder).Append([]byte(`{"context":{"consent":{"categoryPreferences":{"Analytics":true}}}}`))
			bld.Field(engine.ColConsentFields).(*array.BinaryBuilder).AppendNull()
		}
		b := &engine.Batch{Seq: seq, Rec: bld.NewRecordBatch()}
		if err := c.Process(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	inFlight := batch(1) // resolved and processed before the request
	defer inFlight.Release()
	check := func(b *engine.Batch, when, want string) {
		t.Helper()
		var reasons []string
		kept := pol.Select(b, nil, func(row int, r engine.Reason) { reasons = append(reasons, fmt.Sprintf("%d:%s", row, r)) })
		if got := fmt.Sprint(kept, reasons); got != want {
			t.Errorf("%s: kept, dropped %s; want %s", when, got, want)
		}
	}
	check(inFlight, "before the request", "[0 1] []")
	// suppressor's part in the consent stage (the identity part needs a graph)
	if err := c.Suppress(victim); err != nil {
		t.Fatal(err)
	}
	check(inFlight, "suppressed", "[1] [0:suppressed]")
	s := privacy.Subject{Profiles: []uint32{victim}}
	if err := (consentEraser{c}).Erase(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if c.Suppressed(victim) {
		t.Errorf("consentEraser left the profile-id suppression")
	}
	check(inFlight, "erased", "[1] [0:erased]")
	late := batch(2) // resolved before the request, processed after it
	defer late.Release()
	check(late, "processed after the erasure", "[1] [0:erased]")
	if v := c.View(victim); v.Purposes["analytics"].Status != "unknown" {
		t.Errorf("the in-flight batch recorded consent for the erased profile: %+v", v)
	}
}
