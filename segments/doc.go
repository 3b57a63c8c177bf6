// Package segments will own per-purpose consent state and audience
// membership as roaring bitmaps of profile ids, audience rules, and the
// audience HTTP handlers (issues 4 and 5).
//
// Not built yet: the foundation release wires the pipeline without a
// consent or audience stage, and every sink receives every valid event.
// The engine already carries what this package will fill: the
// consent_mask column of each batch (engine.ColConsentMask), a Filter per
// sink (engine.Filter, engine.SinkSpec) and the
// cdp_engine_dropped_total{sink,reason} counter.
package segments
