package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/valyala/fastjson"

	"github.com/cdpstream/cdpstream/engine"
)

// MinimizeConfig is a sink's field minimisation: what of each event the
// sink may see. Paths are dotted JSON paths from the event root.
type MinimizeConfig struct {
	// Allow, when set, keeps only these paths (everything else is
	// removed); list at least type and messageId for the receiver's sake.
	Allow []string `yaml:"allow"`
	// Deny removes these paths (after Allow).
	Deny []string `yaml:"deny"`
	// Hash replaces the string value at these paths by the hex SHA-256 of
	// the value trimmed and, when it holds an '@' (an email), lower-cased:
	// the normalisation ad platforms expect for hashed emails.
	Hash []string `yaml:"hash"`
}

func (c *MinimizeConfig) empty() bool {
	return c == nil || len(c.Allow)+len(c.Deny)+len(c.Hash) == 0
}

// Validate checks the paths; messages name the list and index.
func (c *MinimizeConfig) Validate() error {
	for name, list := range map[string][]string{"allow": c.Allow, "deny": c.Deny, "hash": c.Hash} {
		for i, p := range list {
			if p == "" || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
				return fmt.Errorf("%s[%d]: %q is not a dotted JSON path", name, i, p)
			}
		}
	}
	return nil
}

// Minimizer rewrites one event as a sink may see it. Not safe for
// concurrent use: each sink has its own.
type Minimizer struct {
	allow, deny, hash [][]string
	p                 fastjson.Parser
	a                 fastjson.Arena
}

// NewMinimizer compiles cfg.
func NewMinimizer(cfg MinimizeConfig) (*Minimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	split := func(ps []string) [][]string {
		out := make([][]string, len(ps))
		for i, p := range ps {
			out[i] = strings.Split(p, ".")
		}
		return out
	}
	return &Minimizer{allow: split(cfg.Allow), deny: split(cfg.Deny), hash: split(cfg.Hash)}, nil
}

// Apply appends to dst the event raw as this sink may see it.
func (m *Minimizer) Apply(dst, raw []byte) ([]byte, error) {
	v, err := m.p.ParseBytes(raw)
	if err != nil {
		return dst, fmt.Errorf("cannot minimise an event that is not JSON: %w", err)
	}
	if v.Type() != fastjson.TypeObject {
		return dst, errors.New("cannot minimise an event that is not a JSON object")
	}
	m.a.Reset()
	if len(m.allow) > 0 {
		out := m.a.NewObject()
		for _, path := range m.allow {
			if x := v.Get(path...); x != nil {
				setPath(&m.a, out, path, x)
			}
		}
		v = out
	}
	for _, path := range m.deny {
		if parent := v.Get(path[:len(path)-1]...); parent != nil && parent.Type() == fastjson.TypeObject {
			parent.Del(path[len(path)-1])
		}
	}
	for _, path := range m.hash {
		parent := v.Get(path[:len(path)-1]...)
		if parent == nil || parent.Type() != fastjson.TypeObject {
			continue
		}
		x := parent.Get(path[len(path)-1])
		if x == nil || x.Type() != fastjson.TypeString {
			continue
		}
		s := strings.TrimSpace(string(x.GetStringBytes()))
		if strings.Contains(s, "@") {
			s = strings.ToLower(s)
		}
		sum := sha256.Sum256([]byte(s))
		parent.Set(path[len(path)-1], m.a.NewString(hex.EncodeToString(sum[:])))
	}
	return v.MarshalTo(dst), nil
}

// setPath sets path in obj to x, creating the objects on the way.
func setPath(a *fastjson.Arena, obj *fastjson.Value, path []string, x *fastjson.Value) {
	for _, k := range path[:len(path)-1] {
		next := obj.Get(k)
		if next == nil || next.Type() != fastjson.TypeObject {
			next = a.NewObject()
			obj.Set(k, next)
		}
		obj = next
	}
	obj.Set(path[len(path)-1], x)
}

// minimized wraps a sink that writes the raw column (Kafka, NDJSON,
// stdout): it hands the sink a copy of the batch whose raw column holds
// the minimised events of the selected rows.
type minimized struct {
	engine.Sink
	m   *Minimizer
	buf []byte
}

func (s *minimized) Write(ctx context.Context, b *engine.Batch, sel []int) error {
	raws, ok := b.Rec.Column(engine.ColRaw).(*array.Binary)
	if !ok {
		return errors.New("minimize: batch without a raw column")
	}
	n := b.Rows()
	keep := make([]bool, n)
	if sel == nil {
		for i := range keep {
			keep[i] = true
		}
	} else {
		for _, i := range sel {
			keep[i] = true
		}
	}
	bld := array.NewBinaryBuilder(memory.DefaultAllocator, arrow.BinaryTypes.Binary)
	defer bld.Release()
	for i := 0; i < n; i++ {
		if !keep[i] {
			bld.Append(nil)
			continue
		}
		var err error
		s.buf, err = s.m.Apply(s.buf[:0], raws.Value(i))
		if err != nil {
			return fmt.Errorf("sink %s: %w", s.Name(), err)
		}
		bld.Append(s.buf)
	}
	col := bld.NewArray()
	defer col.Release()
	rec, err := b.Rec.SetColumn(engine.ColRaw, col)
	if err != nil {
		return err
	}
	defer rec.Release()
	nb := *b
	nb.Rec = rec
	return s.Sink.Write(ctx, &nb, sel)
}

// Ping forwards to the wrapped sink when it can ping.
func (s *minimized) Ping(ctx context.Context) error {
	if p, ok := s.Sink.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}
