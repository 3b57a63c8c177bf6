package engine

import (
	"github.com/apache/arrow-go/v18/arrow"
)

// EventType is the Segment-spec call type of an event, stored in the
// `type` column as a uint8.
type EventType uint8

// Event types. The zero value is never stored in a batch: a record without a
// valid type is dead-lettered by the decoder.
const (
	TypeUnknown EventType = iota
	TypeIdentify
	TypeTrack
	TypePage
	TypeScreen
	TypeGroup
	TypeAlias
	// TypeConsent is cdpstream's own record type on the input topic: a
	// consent decision for the person it identifies, in any consent
	// format's fields. It updates consent state and is never forwarded as
	// an event (sink policies drop it, reason consent_record).
	TypeConsent
)

var eventTypeNames = [...]string{"unknown", "identify", "track", "page", "screen", "group", "alias", "consent"}

// String returns the Segment name of t ("track", ...).
func (t EventType) String() string {
	if int(t) < len(eventTypeNames) {
		return eventTypeNames[t]
	}
	return "unknown"
}

// ParseEventType maps a type name to its EventType: the six Segment call
// types and "consent"; TypeUnknown otherwise. It does not allocate.
func ParseEventType(b []byte) EventType {
	switch string(b) {
	case "identify":
		return TypeIdentify
	case "track":
		return TypeTrack
	case "page":
		return TypePage
	case "screen":
		return TypeScreen
	case "group":
		return TypeGroup
	case "alias":
		return TypeAlias
	case "consent":
		return TypeConsent
	}
	return TypeUnknown
}

// Column indices of the event batch schema. See doc.go for the meaning of
// each column; the order is part of the on-disk Arrow IPC format, so new
// columns are appended at the end only.
const (
	ColMessageID = iota
	ColType
	ColEvent
	ColTimestamp
	ColTopic
	ColPartition
	ColOffset
	ColKey
	ColUserID
	ColAnonymousID
	ColPreviousID
	ColGroupID
	ColIdentifiers
	ColProfileID
	ColConsentMask
	ColRaw
	ColConsentFields
	numCols
)

// IdentifierType is the element type of the identifiers column: one
// identifier found in an event, with its type name ("email", "phone",
// "device_id", or a custom type from context.externalIds) and its value as
// found in the event (not yet normalised).
var IdentifierType = arrow.StructOf(
	arrow.Field{Name: "type", Type: arrow.BinaryTypes.String},
	arrow.Field{Name: "value", Type: arrow.BinaryTypes.String},
)

// Schema is the Arrow schema of every event batch.
var Schema = arrow.NewSchema([]arrow.Field{
	ColMessageID:   {Name: "message_id", Type: arrow.BinaryTypes.String},
	ColType:        {Name: "type", Type: arrow.PrimitiveTypes.Uint8},
	ColEvent:       {Name: "event", Type: arrow.BinaryTypes.String, Nullable: true},
	ColTimestamp:   {Name: "timestamp", Type: &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}},
	ColTopic:       {Name: "topic", Type: arrow.BinaryTypes.String},
	ColPartition:   {Name: "partition", Type: arrow.PrimitiveTypes.Int32},
	ColOffset:      {Name: "offset", Type: arrow.PrimitiveTypes.Int64},
	ColKey:         {Name: "key", Type: arrow.BinaryTypes.Binary, Nullable: true},
	ColUserID:      {Name: "user_id", Type: arrow.BinaryTypes.String, Nullable: true},
	ColAnonymousID: {Name: "anonymous_id", Type: arrow.BinaryTypes.String, Nullable: true},
	ColPreviousID:  {Name: "previous_id", Type: arrow.BinaryTypes.String, Nullable: true},
	ColGroupID:     {Name: "group_id", Type: arrow.BinaryTypes.String, Nullable: true},
	ColIdentifiers: {Name: "identifiers", Type: arrow.ListOf(IdentifierType)},
	ColProfileID:   {Name: "profile_id", Type: arrow.PrimitiveTypes.Uint32},
	ColConsentMask: {Name: "consent_mask", Type: arrow.PrimitiveTypes.Uint64},
	ColRaw:         {Name: "raw", Type: arrow.BinaryTypes.Binary},
	// ColConsentFields: the event's consent-bearing fields, cut out by the
	// decoder (see ingest.DecodeConfig.ConsentPaths) as a JSON object with
	// the event's own nesting, so the consent stage reads a few dozen bytes
	// instead of parsing the whole event again. Null when the decoder was
	// given no paths (readers then fall back to raw).
	ColConsentFields: {Name: "consent_fields", Type: arrow.BinaryTypes.Binary, Nullable: true},
}, nil)
