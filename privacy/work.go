package privacy

import (
	"context"
	"slices"
	"time"
)

// The work of a request goes through these interfaces; cmd/ adapts the
// identity graph, the consent stage, the audience store and the sinks to
// them. Every method must be idempotent: a request interrupted by a crash
// or failed by an error runs again from its first step, so a second Erase
// of profiles already erased, or a second Suppress, must succeed.

// Subject is who a request is about: the identities as given and the
// profile ids they resolved to. The callee must not keep the slices.
type Subject struct {
	Identities []Identity
	Profiles   []uint32
}

// Subjects resolves identities (raw or sha256, see Identity) to every live
// profile they reach, merged profiles followed to their survivor, sorted
// and without duplicates. Identities that reach nothing are not an error.
type Subjects interface {
	Resolve(ctx context.Context, ids []Identity) ([]uint32, error)
}

// Eraser removes what one component holds about profiles: the identity
// graph (identifiers, profile records, merge-log entries, the profile key),
// consent, audiences. Name labels the step in the audit trail and metrics
// ("identity", "consent", "audiences").
type Eraser interface {
	Name() string
	Erase(ctx context.Context, s Subject) error
}

// Suppressor keeps, or drops, keyed hashes of every identifier of the
// subject so that the person's future events are dropped at ingest. It is
// called before any Eraser of the same request, while the profiles still
// list their identifiers.
type Suppressor interface {
	Suppress(ctx context.Context, s Subject) error
	Unsuppress(ctx context.Context, s Subject) error
}

// Exporter returns what one component holds about profiles, as a value
// encoding/json can marshal (a slice gives one NDJSON line per element in
// portability exports). Name is the section name in the export
// ("identifiers", "traits", "consent", "audiences", "merges").
type Exporter interface {
	Name() string
	Export(ctx context.Context, s Subject) (any, error)
}

// DeletionNotifier tells downstream tools that a person was erased,
// carrying the identifiers each sink may see. It is called before any
// Eraser, while the identifiers can still be looked up.
type DeletionNotifier interface {
	NotifyDeletion(ctx context.Context, requestID string, s Subject) error
}

// Holder stops a person's events from reaching downstream tools while
// their erasure runs: Hold is called with an erasure's profiles just
// before its deletion notices go out (again at each attempt), Release once
// the request finished. The identity graph implements it (its sinks'
// filter drops held profiles' rows), so no tool receives an event of the
// person after their deletion notice.
type Holder interface {
	Hold(requestID string, pids []uint32)
	Release(requestID string)
}

// Barrier is the pipeline seen from an erasure: WaitCommitted returns once
// every batch read before the call has committed its input offsets. An
// erasure waits on it after its erasers, before it reports completion, so
// that no crash can replay the person's events resolved before the
// erasure (they would be resolved again, to a new profile with their
// identifiers). engine.Runner implements it.
type Barrier interface {
	WaitCommitted(ctx context.Context) error
}

// InactiveLister lists live profiles last seen before a time, for
// retention (Config.Retention). fn returning an error stops the listing
// with that error.
type InactiveLister interface {
	Inactive(ctx context.Context, before time.Time, fn func(pid uint32) error) error
}

// InactiveChecker is optionally implemented by an InactiveLister. A
// retention request runs after the sweep that listed its profiles; before
// its first step it asks Keep which of them are to be erased now: a
// profile seen again since before (the cutoff at the run) is spared; one
// merged meanwhile into a profile that is itself inactive is replaced by
// that profile (erasing a merged id alone is refused by the graph, and
// would leave the person's identifiers in the survivor); one merged into
// an active profile is spared; one already gone is kept (erasing it again
// is a no-op). keep is sorted without duplicates; spared counts the
// listed profiles left alone.
type InactiveChecker interface {
	Keep(ctx context.Context, before time.Time, pids []uint32) (keep []uint32, spared int, err error)
}

// Rectifier corrects a subject's traits or identifiers.
type Rectifier interface {
	Rectify(ctx context.Context, s Subject, fix Rectification) error
}

// Work is the set of components requests act through. Subjects is
// required; a request type whose components are missing is refused at
// submission (400) and not listed by discovery: erasure needs Erasers,
// suppress and unsuppress a Suppressor, erasure_suppress both, access and
// portability Exporters, rectification a Rectifier.
type Work struct {
	Subjects   Subjects
	Erasers    []Eraser
	Suppressor Suppressor
	Exporters  []Exporter
	Notifiers  []DeletionNotifier
	// Holder, optional, holds an erasure's profiles from its notices to
	// its end.
	Holder Holder
	// Barrier, optional, is waited on before an erasure completes.
	Barrier   Barrier
	Rectifier Rectifier
	// Inactive lists profiles for retention; required when
	// Config.Retention.InactiveAfter is set.
	Inactive InactiveLister
	// Disabled lists request types refused although their components
	// exist: e.g. erasure_suppress when the Suppressor keys suppression by
	// profile id, which the erasure removes.
	Disabled []string
}

func (w Work) supports(typ string) bool {
	if slices.Contains(w.Disabled, typ) {
		return false
	}
	switch typ {
	case TypeErasure:
		return len(w.Erasers) > 0
	case TypeErasureSuppress:
		return len(w.Erasers) > 0 && w.Suppressor != nil
	case TypeSuppress, TypeUnsuppress:
		return w.Suppressor != nil
	case TypeAccess, TypePortability:
		return len(w.Exporters) > 0
	case TypeRectification:
		return w.Rectifier != nil
	}
	return false
}

var allTypes = []string{TypeErasure, TypeAccess, TypePortability, TypeRectification, TypeSuppress, TypeUnsuppress, TypeErasureSuppress}
