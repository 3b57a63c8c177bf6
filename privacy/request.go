package privacy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Request types: the three of OpenDSR and the cdpstream extensions.
const (
	TypeErasure         = "erasure"
	TypeAccess          = "access"
	TypePortability     = "portability"
	TypeRectification   = "rectification"
	TypeSuppress        = "suppress"
	TypeUnsuppress      = "unsuppress"
	TypeErasureSuppress = "erasure_suppress"
)

// Statuses of a request (OpenDSR section 8).
const (
	StatusPending    = "pending"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusCancelled  = "cancelled"
)

// Identity formats accepted. OpenDSR also names sha1 and md5; they are
// refused: a weak hash of an email is as good as the email, and the graph
// cannot be searched by them.
const (
	FormatRaw    = "raw"
	FormatSHA256 = "sha256"
)

// DefaultIdentityTypes are the OpenDSR 2.0 identity types (section 5.1).
var DefaultIdentityTypes = []string{"controller_customer_id", "android_advertising_id", "android_id", "email",
	"fire_advertising_id", "ios_advertising_id", "ios_vendor_id", "microsoft_advertising_id",
	"microsoft_publisher_id", "roku_publisher_id", "roku_advertising_id"}

// Identity is one subject identity of a request. Value is plain for raw,
// 64 lowercase hex digits for sha256 (SHA-256 of the normalised value:
// trimmed, and lowercased for email).
type Identity struct {
	Type   string `json:"identity_type"`
	Value  string `json:"identity_value"`
	Format string `json:"identity_format"`
}

// Rectification is the body of a rectification request, carried in
// extensions["cdpstream"].rectification: traits to set (null deletes)
// and identifier values to replace.
type Rectification struct {
	Traits      map[string]any  `json:"traits,omitempty"`
	Identifiers []IdentifierFix `json:"identifiers,omitempty"`
}

// UnmarshalJSON decodes the numbers in Traits as json.Number, so a trait
// such as an account number keeps every digit (a float64 rounds past
// 2^53); the audience store writes them back as they came.
func (r *Rectification) UnmarshalJSON(b []byte) error {
	type plain Rectification
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*r = Rectification(p)
	return nil
}

// IdentifierFix replaces the identifier Type=Old by Type=New.
type IdentifierFix struct {
	Type string `json:"type"`
	Old  string `json:"old"`
	New  string `json:"new"`
}

// Request is a validated OpenDSR request body.
type Request struct {
	ID            string         `json:"subject_request_id"`
	Type          string         `json:"subject_request_type"`
	Regulation    string         `json:"regulation"`
	Submitted     time.Time      `json:"submitted_time"`
	Identities    []Identity     `json:"subject_identities"`
	APIVersion    string         `json:"api_version,omitempty"`
	CallbackURLs  []string       `json:"status_callback_urls,omitempty"`
	Rectification *Rectification `json:"rectification,omitempty"`
}

// Limits on a request body.
const (
	maxRequestBytes = 64 << 10
	maxIdentities   = 100
	maxValueBytes   = 1024
	maxCallbacks    = 10
)

// FieldError is a validation failure; the API answers it with the OpenDSR
// error body (spec 7.6), code 400.
type FieldError struct {
	Field   string
	Message string // the whole sentence, e.g. "subject_request_id field is required"
}

func (e *FieldError) Error() string { return "privacy: invalid request: " + e.Message }

func required(field string) *FieldError {
	return &FieldError{Field: field, Message: field + " field is required"}
}

func invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Message: field + ": " + fmt.Sprintf(format, args...)}
}

// wire is the JSON shape of a request; pointers tell absent from empty.
type wire struct {
	Regulation   *string          `json:"regulation"`
	ID           *string          `json:"subject_request_id"`
	Type         *string          `json:"subject_request_type"`
	Submitted    *string          `json:"submitted_time"`
	Identities   *[]*wireIdentity `json:"subject_identities"`
	APIVersion   *string          `json:"api_version"`
	CallbackURLs *[]string        `json:"status_callback_urls"`
	Extensions   map[string]json.RawMessage
}

type wireIdentity struct {
	Type   *string `json:"identity_type"`
	Value  *string `json:"identity_value"`
	Format *string `json:"identity_format"`
}

// ExtensionDomain is the key of cdpstream's own extension object.
const ExtensionDomain = "cdpstream"

// ParseRequest decodes and validates an OpenDSR request body. types are
// the accepted identity types. Unknown top-level fields and other
// processors' extensions are ignored (spec 7.1.2). The returned error is a
// *FieldError for every validation failure.
func ParseRequest(body []byte, types []string) (*Request, error) {
	if len(body) > maxRequestBytes {
		return nil, &FieldError{Field: "body", Message: fmt.Sprintf("body is larger than %d bytes", maxRequestBytes)}
	}
	var w wire
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, &FieldError{Field: "body", Message: "body is not a valid OpenDSR request: " + jsonProblem(err)}
	}
	if dec.More() {
		return nil, &FieldError{Field: "body", Message: "body has data after the JSON object"}
	}
	r := &Request{}
	// Order: the spec's order of required fields, so one missing field
	// gives one predictable message.
	if w.Regulation == nil {
		return nil, required("regulation")
	}
	switch r.Regulation = *w.Regulation; r.Regulation {
	case "gdpr", "ccpa":
	default:
		return nil, invalid("regulation", "must be gdpr or ccpa")
	}
	if w.ID == nil {
		return nil, required("subject_request_id")
	}
	r.ID = *w.ID
	if !validUUID(r.ID) {
		return nil, invalid("subject_request_id", "must be a lowercase UUID (8-4-4-4-12 hex digits)")
	}
	if w.Type == nil {
		return nil, required("subject_request_type")
	}
	switch r.Type = *w.Type; r.Type {
	case TypeErasure, TypeAccess, TypePortability, TypeRectification, TypeSuppress, TypeUnsuppress, TypeErasureSuppress:
	default:
		return nil, invalid("subject_request_type", "must be one of erasure, access, portability, rectification, suppress, unsuppress, erasure_suppress")
	}
	if w.Submitted == nil {
		return nil, required("submitted_time")
	}
	t, err := time.Parse(time.RFC3339Nano, *w.Submitted)
	if err != nil {
		return nil, invalid("submitted_time", "must be an RFC 3339 date-time")
	}
	r.Submitted = t.UTC()
	// subject_identities is optional in the spec when an extension carries
	// identities; no extension cdpstream reads does, so it is required.
	if w.Identities == nil || len(*w.Identities) == 0 {
		return nil, required("subject_identities")
	}
	if len(*w.Identities) > maxIdentities {
		return nil, invalid("subject_identities", "at most %d identities", maxIdentities)
	}
	for i, wi := range *w.Identities {
		f := fmt.Sprintf("subject_identities[%d]", i)
		if wi == nil {
			return nil, invalid(f, "must be an object")
		}
		if wi.Type == nil {
			return nil, required(f + ".identity_type")
		}
		if wi.Value == nil {
			return nil, required(f + ".identity_value")
		}
		if wi.Format == nil {
			return nil, required(f + ".identity_format")
		}
		id := Identity{Type: *wi.Type, Value: *wi.Value, Format: *wi.Format}
		if !contains(types, id.Type) {
			return nil, invalid(f+".identity_type", "unsupported identity type (see /opendsr/discovery)")
		}
		switch id.Format {
		case FormatRaw:
			if strings.TrimSpace(id.Value) == "" || len(id.Value) > maxValueBytes {
				return nil, invalid(f+".identity_value", "must be 1 to %d bytes", maxValueBytes)
			}
		case FormatSHA256:
			if len(id.Value) != 64 || !isLowerHex(id.Value) {
				return nil, invalid(f+".identity_value", "must be 64 lowercase hex digits for sha256")
			}
		default:
			return nil, invalid(f+".identity_format", "must be raw or sha256")
		}
		r.Identities = append(r.Identities, id)
	}
	if w.APIVersion != nil {
		r.APIVersion = *w.APIVersion
		if major, _, _ := strings.Cut(r.APIVersion, "."); major != "2" {
			return nil, invalid("api_version", "must be 2.x")
		}
	}
	if w.CallbackURLs != nil {
		if len(*w.CallbackURLs) > maxCallbacks {
			return nil, invalid("status_callback_urls", "at most %d urls", maxCallbacks)
		}
		for i, s := range *w.CallbackURLs {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(s) > 2048 {
				return nil, invalid(fmt.Sprintf("status_callback_urls[%d]", i), "must be an absolute http or https url")
			}
			r.CallbackURLs = append(r.CallbackURLs, s)
		}
	}
	if raw, ok := w.Extensions[ExtensionDomain]; ok {
		var ext struct {
			Rectification *Rectification `json:"rectification"`
		}
		if err := json.Unmarshal(raw, &ext); err != nil {
			return nil, invalid("extensions."+ExtensionDomain, "%s", jsonProblem(err))
		}
		r.Rectification = ext.Rectification
	}
	if r.Type == TypeRectification {
		if r.Rectification == nil || (len(r.Rectification.Traits) == 0 && len(r.Rectification.Identifiers) == 0) {
			return nil, required("extensions." + ExtensionDomain + ".rectification")
		}
		for i, fx := range r.Rectification.Identifiers {
			if fx.Type == "" || fx.Old == "" || fx.New == "" {
				return nil, invalid(fmt.Sprintf("extensions.%s.rectification.identifiers[%d]", ExtensionDomain, i), "type, old and new must be set")
			}
		}
	}
	return r, nil
}

// jsonProblem describes a decoding error without echoing the body (which
// may hold personal data).
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("malformed JSON at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		if e.Field != "" {
			return fmt.Sprintf("%s has the wrong type (want %s)", e.Field, e.Type)
		}
		return "wrong JSON type (want " + e.Type.String() + ")"
	}
	return "malformed JSON"
}

// digest is the identity of a request's content: SHA-256 (hex) over its
// canonical JSON encoding, so the same request sent twice with different
// whitespace or field order is recognised as the same. It is stored only
// keyed (Service.digest): with every other field of a finished record in
// plain, it would confirm a guess of the identities.
func (r *Request) digest() string {
	b, _ := json.Marshal(r)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// validUUID accepts the canonical lowercase 8-4-4-4-12 form. The spec asks
// controllers for version 4; other versions are accepted (a v7 id is as
// unique) and the version is not checked.
func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func uuidBytes(s string) []byte {
	b, _ := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	return b
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// normalizedSHA256 is the hex SHA-256 of the normalised raw value (email
// lowercased, every type trimmed), or the value itself for sha256: the
// same person given raw in one request and hashed in another meets in it.
func (id Identity) normalizedSHA256() string {
	if id.Format == FormatSHA256 {
		return id.Value
	}
	v := strings.TrimSpace(id.Value)
	if id.Type == "email" {
		v = strings.ToLower(v)
	}
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}
