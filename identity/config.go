package identity

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"time"
)

// Well-known identifier type names. user_id, anonymous_id and previous_id
// come from their own event columns; every other type comes from the
// identifiers column, named by the decoder (email, phone, device_id,
// advertising_id, or the type of a context.externalIds entry).
const (
	TypeUserID        = "user_id"
	TypeAnonymousID   = "anonymous_id"
	TypeEmail         = "email"
	TypePhone         = "phone"
	TypeDeviceID      = "device_id"
	TypeAdvertisingID = "advertising_id"
)

// Normaliser names accepted in TypeConfig.Normalize.
const (
	NormNone  = "none"  // the value as found
	NormTrim  = "trim"  // surrounding white space removed
	NormLower = "lower" // trimmed, ASCII and Unicode lower case
	NormEmail = "email" // trimmed, lower case; must contain one '@' with text on both sides
	NormPhone = "phone" // digits only, with a leading '+' kept if the value starts with one
)

// DefaultSecretEnv is the environment variable read for the HMAC secret
// when Config.Secret is empty.
const DefaultSecretEnv = "CDPSTREAM_IDENTITY_SECRET"

// Config configures identity resolution. The zero value is not usable; call
// Defaults to fill unset fields, then Validate.
type Config struct {
	// Secret is the HMAC-SHA256 key under which identifiers are hashed into
	// Pebble keys. Empty: read from the environment variable SecretEnv.
	// Changing it orphans every stored identifier, so New refuses a store
	// written under another secret (ErrSecretMismatch).
	Secret string `yaml:"secret"`
	// SecretEnv names the environment variable that holds the secret when
	// Secret is empty. Default CDPSTREAM_IDENTITY_SECRET.
	SecretEnv string `yaml:"secret_env"`
	// Types lists the identifier types that take part in resolution, with
	// their rules. Default: user_id, email, phone, advertising_id,
	// device_id, anonymous_id (in that priority order).
	Types []TypeConfig `yaml:"types"`
	// UnknownTypes says what happens to an identifier whose type is not in
	// Types (a custom context.externalIds type): "ignore" (default) or
	// "accept", which resolves it with lowest priority, trim normalisation,
	// the default blocked values and no limit. Accepted custom types appear
	// as type="other" in metric labels.
	UnknownTypes string `yaml:"unknown_types"`
	// MaxMerges caps the merges a profile may absorb (counting merges its
	// merged profiles absorbed). Past it, events still resolve but no
	// further merge happens (reason cap_merges). -1 means no cap.
	// Default 100.
	MaxMerges int `yaml:"max_merges"`
	// MaxIdentifiers caps the identifiers of one profile. Past it, new
	// identifiers are not added and merges that would exceed it are refused
	// (reason cap_identifiers). -1 means no cap. Default 500.
	MaxIdentifiers int `yaml:"max_identifiers"`
	// CacheBytes bounds the in-memory caches in front of Pebble (identifier
	// → profile id, and decoded profile records), in bytes. Default 256 MiB,
	// roughly 5M cached identifiers. Costs memory, saves Pebble reads.
	CacheBytes int64 `yaml:"cache_bytes"`
	// SeenGranularity is how far an event's time must pass an identifier's
	// last-seen time before last seen is rewritten. Smaller is more precise
	// and costs a profile write per event. Default 24h.
	SeenGranularity time.Duration `yaml:"seen_granularity"`
}

// TypeConfig configures one identifier type.
type TypeConfig struct {
	// Name is the type name: user_id, anonymous_id, or a type name of the
	// identifiers column (email, phone, device_id, advertising_id, custom).
	Name string `yaml:"name"`
	// Normalize is one of none, trim, lower, email, phone. Default: email
	// for email, phone for phone, lower for advertising_id, trim otherwise.
	Normalize string `yaml:"normalize"`
	// Priority orders types when a merge would break a limit: 1 is the
	// highest; the event's identifier of the numerically largest priority
	// is dropped first. Default: the position in Types, 1-based.
	Priority int `yaml:"priority"`
	// Unique: a profile holds at most one value of this type, ever (limit 1
	// without window, whatever Limit says). Default false.
	Unique bool `yaml:"unique"`
	// Limit bounds how many values of this type one profile may hold.
	Limit Limit `yaml:"limit"`
	// Blocked lists values (compared case-insensitively after
	// normalisation) that never become identifiers; they stay in the event.
	// Default: "", null, undefined, 0, -1, anonymous (plus placeholders for
	// email). Set to an empty list explicitly to block nothing.
	Blocked []string `yaml:"blocked"`
	// BlockedRegex lists regular expressions (RE2, matched against the
	// normalised value) that never become identifiers. Default: ^[0-]*$
	// (zeros and dashes, e.g. an all-zero advertising id).
	BlockedRegex []string `yaml:"blocked_regex"`
}

// Limit bounds the values of one type per profile.
type Limit struct {
	// Max is the number of values allowed; 0 means no limit.
	Max int `yaml:"max"`
	// Window, when > 0, counts only values first seen within any window of
	// this length (e.g. 8760h: Max per year); 0 counts all values ever.
	Window time.Duration `yaml:"window"`
}

// Default blocked values, shared by every type unless configured.
var (
	defaultBlocked      = []string{"", "null", "undefined", "0", "-1", "anonymous", "nil", "none"}
	defaultBlockedEmail = []string{"", "null", "undefined", "0", "-1", "anonymous", "nil", "none",
		"test@test.com", "test@example.com", "email@example.com", "noemail@noemail.com", "no@email.com"}
	defaultBlockedRegex = []string{`^[0-]*$`}
)

const (
	day  = 24 * time.Hour
	week = 7 * day
	year = 365 * day
)

// DefaultTypes returns the default identifier types, highest priority first.
func DefaultTypes() []TypeConfig {
	return []TypeConfig{
		{Name: TypeUserID, Limit: Limit{Max: 1}},
		{Name: TypeEmail, Limit: Limit{Max: 5, Window: year}},
		{Name: TypePhone, Limit: Limit{Max: 5, Window: year}},
		{Name: TypeAdvertisingID, Limit: Limit{Max: 20, Window: year}},
		{Name: TypeDeviceID, Limit: Limit{Max: 100, Window: week}},
		{Name: TypeAnonymousID, Limit: Limit{Max: 100, Window: week}},
	}
}

// Defaults fills unset fields with their defaults.
func (c *Config) Defaults() {
	if c.SecretEnv == "" {
		c.SecretEnv = DefaultSecretEnv
	}
	if c.Types == nil {
		c.Types = DefaultTypes()
	}
	if c.UnknownTypes == "" {
		c.UnknownTypes = "ignore"
	}
	if c.MaxMerges == 0 {
		c.MaxMerges = 100
	}
	if c.MaxIdentifiers == 0 {
		c.MaxIdentifiers = 500
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = 256 << 20
	}
	if c.SeenGranularity == 0 {
		c.SeenGranularity = day
	}
	for i := range c.Types {
		c.Types[i].defaults(i)
	}
}

func (t *TypeConfig) defaults(i int) {
	if t.Normalize == "" {
		switch t.Name {
		case TypeEmail:
			t.Normalize = NormEmail
		case TypePhone:
			t.Normalize = NormPhone
		case TypeAdvertisingID:
			t.Normalize = NormLower
		default:
			t.Normalize = NormTrim
		}
	}
	if t.Priority == 0 {
		t.Priority = i + 1
	}
	if t.Blocked == nil {
		if t.Name == TypeEmail {
			t.Blocked = defaultBlockedEmail
		} else {
			t.Blocked = defaultBlocked
		}
	}
	if t.BlockedRegex == nil {
		t.BlockedRegex = defaultBlockedRegex
	}
}

// Validate reports the first invalid field, named by its yaml path under
// "identity".
func (c *Config) Validate() error {
	if c.secret() == "" {
		return fieldErr("identity.secret", "must be set, or the environment variable named by identity.secret_env ("+c.SecretEnv+")")
	}
	if len(c.Types) == 0 {
		return fieldErr("identity.types", "must list at least one type")
	}
	if len(c.Types) > maxTypes {
		return fieldErr("identity.types", "must list at most "+strconv.Itoa(maxTypes)+" types")
	}
	seen := make(map[string]bool, len(c.Types))
	for i := range c.Types {
		t := &c.Types[i]
		p := "identity.types[" + strconv.Itoa(i) + "]"
		if t.Name == "" || len(t.Name) > 64 {
			return fieldErr(p+".name", "must be 1 to 64 bytes")
		}
		if t.Name == TypePreviousID {
			return fieldErr(p+".name", "previous_id is resolved as user_id or anonymous_id, not a type of its own")
		}
		if seen[t.Name] {
			return fieldErr(p+".name", "duplicate type "+strconv.Quote(t.Name))
		}
		seen[t.Name] = true
		if _, ok := normalisers[t.Normalize]; !ok {
			return fieldErr(p+".normalize", "must be one of none, trim, lower, email, phone")
		}
		if t.Priority < 1 {
			return fieldErr(p+".priority", "must be >= 1")
		}
		if t.Limit.Max < 0 {
			return fieldErr(p+".limit.max", "must be >= 0")
		}
		if t.Limit.Window < 0 {
			return fieldErr(p+".limit.window", "must be >= 0")
		}
		if t.Limit.Window > 0 && t.Limit.Max == 0 {
			return fieldErr(p+".limit.window", "needs limit.max > 0")
		}
		for j, re := range t.BlockedRegex {
			if _, err := regexp.Compile(re); err != nil {
				return fieldErr(p+".blocked_regex["+strconv.Itoa(j)+"]", err.Error())
			}
		}
	}
	if c.UnknownTypes != "ignore" && c.UnknownTypes != "accept" {
		return fieldErr("identity.unknown_types", "must be ignore or accept")
	}
	if c.MaxMerges < -1 {
		return fieldErr("identity.max_merges", "must be >= -1 (-1: no cap)")
	}
	if c.MaxIdentifiers < -1 {
		return fieldErr("identity.max_identifiers", "must be >= -1 (-1: no cap)")
	}
	if c.CacheBytes < 0 {
		return fieldErr("identity.cache_bytes", "must be >= 0")
	}
	if c.SeenGranularity < 0 {
		return fieldErr("identity.seen_granularity", "must be >= 0")
	}
	return nil
}

// secret returns the configured secret, falling back to the environment.
func (c *Config) secret() string {
	if c.Secret != "" {
		return c.Secret
	}
	if c.SecretEnv == "" {
		return ""
	}
	return os.Getenv(c.SecretEnv)
}

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("identity: invalid config")

func fieldErr(field, msg string) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, field, msg)
}
