// Package iab decodes the IAB consent strings cdpstream reads from events:
// TCF v2 TC strings (DecodeTCF), GPP strings (DecodeGPP: header, TCF EU v2,
// US Privacy, and the US national and state sections usnat, usca, usva,
// usco, usut, usct), and US Privacy strings (DecodeUSP).
//
// # Why not a library
//
// Issue 4 prefers a maintained decoder (LiveRamp/iabconsent is MIT) over a
// hand-written one. The module proxy this project builds against refuses
// github.com/LiveRamp/iabconsent, github.com/prebid/go-gdpr and
// github.com/prebid/go-gpp (HTTP 403), so these decoders are written from
// the IAB specifications. They are checked against the public vectors in
// ../shared/testdata/consent_vectors.json, taken from those libraries' own
// tests and from IABTechLab/iabgpp-es (TestTCFVectors, TestGPPVectors,
// TestUSPVectors), and fuzzed (FuzzTCF, FuzzGPP, FuzzUS, FuzzUSP). Swapping
// in a library later only touches this package.
//
// # Rules
//
//   - Strings are bit fields in base64url (padding optional; '+' and '/'
//     accepted). A string has 6 bits per character: a field may end in the
//     last character's low bits, which byte-oriented base64 would drop.
//   - DecodeTCF is strict by default: version 2 only, no truncation
//     anywhere (including the 12-bit NumPubRestrictions some old encoders
//     omitted), and for TCF policy version >= 4 (TCF v2.2) no legitimate
//     interest for purposes 3-6 (ErrTCFPolicy). TCFOptions.Lenient
//     tolerates the last two and records warnings.
//   - DecodeGPP fails only on a bad header; a bad section sets that
//     section's Err and leaves the others usable. A header listing more
//     sections than the string carries decodes with a warning (iabgpp-es
//     does the same).
//   - A usnat section with a v2 header over a 66-bit core is widened from
//     the v1 field widths, as iabgpp-es does.
//   - Decoded values share no memory with the input string.
//
// Decoding allocates the result; callers on the event path cache decoded
// strings (package segments keeps a bounded cache keyed by the string).
package iab
