package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// RunnerConfig tunes the pipeline runner.
type RunnerConfig struct {
	// QueueDepth is how many batches may wait between two pipeline steps
	// (source → first stage, stage → stage, last stage → each sink, sinks →
	// commit). Memory is bounded by about (3 + stages + sinks) × QueueDepth
	// batches. Default 4.
	QueueDepth int `yaml:"queue_depth"`
	// DrainTimeout bounds how long a shutdown may take to finish the batches
	// in flight before Run gives up and returns; uncommitted batches are
	// then replayed on the next start. Default 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// SerialStages runs every stage on a batch before the first stage
	// starts the next batch (one goroutine for all stages). By default each
	// stage has a goroutine of its own and consecutive stages overlap on
	// consecutive batches: a stage still sees every batch in order, and
	// every batch passes every stage before any sink, but a later stage
	// reading another stage's state (an audience's consent condition) may
	// see it already moved on by up to QueueDepth+1 batches.
	SerialStages bool `yaml:"serial_stages"`
}

// MaxQueueDepth bounds RunnerConfig.QueueDepth. A batch leaves the
// consent stage at most about 3×QueueDepth+3 batches before a sink filters
// it (two channels and the hand-out behind it, then the sink's), and the
// consent stage keeps what policies read for the last 64 batches; deeper
// queues would also hold (3 + stages + sinks) × QueueDepth batches of
// memory for no throughput (a queue only absorbs jitter).
const MaxQueueDepth = 16

// Defaults fills zero fields with their defaults.
func (c *RunnerConfig) Defaults() {
	if c.QueueDepth == 0 {
		c.QueueDepth = 4
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// Validate reports the first invalid field.
func (c RunnerConfig) Validate() error {
	if c.QueueDepth < 1 || c.QueueDepth > MaxQueueDepth {
		return fmt.Errorf("queue_depth: must be 1..%d, got %d", MaxQueueDepth, c.QueueDepth)
	}
	if c.DrainTimeout < 0 {
		return fmt.Errorf("drain_timeout: must be >= 0, got %s", c.DrainTimeout)
	}
	return nil
}

// SinkSpec attaches an optional filter to a sink. A nil Filter sends every
// row of every batch to the sink.
type SinkSpec struct {
	Sink   Sink
	Filter Filter
}

// Stats are the runner's running totals, for progress lines and tests.
type Stats struct {
	Batches   uint64 // batches read from the source
	Received  uint64 // records read (valid + rejected)
	Valid     uint64 // valid events
	Dead      uint64 // records sent to the dead-letter sink
	Committed uint64 // batches committed
	// Sent and Dropped hold per sink, in SinkSpec order, the rows written
	// and the rows it did not get: those its filter did not select, and
	// those a stage removed (Batch.Drops).
	Sent, Dropped []uint64
}

// Runner moves batches from a source through stages into sinks and commits
// the source's offsets once every sink has acknowledged a batch.
//
// Shape: one goroutine reads the source, one per stage runs it (or one for
// all stages with SerialStages), one hands batches out, one per sink
// writes, and one commits. They are joined by channels of QueueDepth
// batches, so a slow sink slows the source instead of growing memory.
// Offsets are committed strictly in batch order, after the dead-letter sink
// and every sink acknowledged the batch: delivery is at-least-once, and a
// crash replays at most the batches in flight.
//
// Shutdown: cancelling the context passed to Run stops the source only. The
// source returns what it holds as a final batch, the batches in flight are
// written, flushed and committed, and Run returns nil. A failing stage, sink
// or commit stops everything at once and Run returns that error; nothing
// after the last committed batch is committed, so it is replayed on restart.
type Runner struct {
	cfg    RunnerConfig
	src    Source
	stages []Stage
	sinks  []SinkSpec
	dead   DeadLetterSink
	log    *slog.Logger
	m      *Metrics

	stageC []*component
	sinkC  []*component
	srcC   *component
	deadC  *component
	commC  *component

	batches, received, valid, deadN, committed atomic.Uint64
	sent, dropped                              []atomic.Uint64
	running                                    atomic.Bool
}

// NewRunner wires a pipeline. dead may be nil only if the source never
// rejects records; a batch with dead letters and no dead-letter sink stops
// the runner with an error rather than dropping them.
func NewRunner(cfg RunnerConfig, src Source, stages []Stage, sinks []SinkSpec, dead DeadLetterSink, m *Metrics, log *slog.Logger) (*Runner, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("runner: %w", err)
	}
	if src == nil {
		return nil, errors.New("runner: no source")
	}
	if len(sinks) == 0 {
		return nil, errors.New("runner: no sinks")
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Runner{cfg: cfg, src: src, stages: stages, sinks: sinks, dead: dead, log: log, m: m,
		sent: make([]atomic.Uint64, len(sinks)), dropped: make([]atomic.Uint64, len(sinks))}
	r.srcC = m.component("source")
	r.deadC = m.component("dead_letter")
	r.commC = m.component("commit")
	seen := map[string]bool{}
	for _, s := range stages {
		r.stageC = append(r.stageC, m.component("stage:"+s.Name()))
	}
	for i, s := range sinks {
		if s.Sink == nil {
			return nil, fmt.Errorf("runner: sinks[%d] is nil", i)
		}
		if seen[s.Sink.Name()] {
			return nil, fmt.Errorf("runner: sinks[%d]: duplicate sink name %q", i, s.Sink.Name())
		}
		seen[s.Sink.Name()] = true
		r.sinkC = append(r.sinkC, m.component("sink:"+s.Sink.Name()))
	}
	return r, nil
}

// Running reports whether Run is between start and return; /readyz uses it.
func (r *Runner) Running() bool { return r.running.Load() }

// WaitCommitted returns once every batch read from the source before the
// call has been committed (its offsets, after every sink acknowledged
// it), so that no crash can replay them any more; or with ctx's error, or
// an error when the runner stopped with some of them uncommitted. A
// privacy erasure waits on it before it reports completion: the events
// resolved before the erasure can then never be resolved again.
func (r *Runner) WaitCommitted(ctx context.Context) error {
	target := r.batches.Load()
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		if r.committed.Load() >= target {
			return nil
		}
		if !r.running.Load() {
			return fmt.Errorf("the pipeline stopped with %d of the batches read before the wait uncommitted", target-r.committed.Load())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stats returns a snapshot of the running totals.
func (r *Runner) Stats() Stats {
	s := Stats{Batches: r.batches.Load(), Received: r.received.Load(), Valid: r.valid.Load(),
		Dead: r.deadN.Load(), Committed: r.committed.Load(),
		Sent: make([]uint64, len(r.sinks)), Dropped: make([]uint64, len(r.sinks))}
	for i := range r.sinks {
		s.Sent[i] = r.sent[i].Load()
		s.Dropped[i] = r.dropped[i].Load()
	}
	return s
}

// inflight is one batch on its way from the stages to the commit. wg counts
// the sinks (and the dead-letter sink) that have yet to acknowledge it.
type inflight struct {
	b  *Batch
	wg sync.WaitGroup
}

// Run runs the pipeline until the source is exhausted (io.EOF), ctx is
// cancelled (graceful drain, returns nil) or a component fails (returns the
// error). It closes no component; the caller owns them.
func (r *Runner) Run(ctx context.Context) error {
	r.running.Store(true)
	defer r.running.Store(false)

	// work is cancelled only on failure, or when a drain overruns its
	// timeout: cancelling ctx stops the source but lets in-flight work end.
	work, fail := context.WithCancelCause(context.WithoutCancel(ctx))
	defer fail(nil)
	stop := context.AfterFunc(ctx, func() {
		if r.cfg.DrainTimeout > 0 {
			t := time.AfterFunc(r.cfg.DrainTimeout, func() { fail(errors.New("runner: drain timeout exceeded")) })
			context.AfterFunc(work, func() { t.Stop() })
		}
	})
	defer stop()

	var wg sync.WaitGroup
	fromSource := make(chan *Batch, r.cfg.QueueDepth)
	toCommit := make(chan *inflight, r.cfg.QueueDepth)
	toSink := make([]chan *inflight, len(r.sinks))
	for i := range toSink {
		toSink[i] = make(chan *inflight, r.cfg.QueueDepth)
	}
	toDead := make(chan *inflight, r.cfg.QueueDepth)

	var srcErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(fromSource)
		srcErr = r.readSource(ctx, work, fromSource)
		if srcErr != nil {
			fail(srcErr)
		}
	}()

	// One goroutine per stage, so consecutive stages work on consecutive
	// batches at once (identity on batch n+1 while consent has batch n);
	// with SerialStages one goroutine runs them all, batch by batch.
	staged := (<-chan *Batch)(fromSource)
	for _, chain := range r.stageChains() {
		out := make(chan *Batch, r.cfg.QueueDepth)
		wg.Add(1)
		go func(in <-chan *Batch) {
			defer wg.Done()
			defer close(out)
			if err := r.runStages(work, chain, in, out); err != nil {
				fail(err)
			}
		}(staged)
		staged = out
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			for _, c := range toSink {
				close(c)
			}
			close(toDead)
			close(toCommit)
		}()
		r.fanOut(work, staged, toSink, toDead, toCommit)
	}()

	for i := range r.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.runSink(work, i, toSink[i]); err != nil {
				fail(fmt.Errorf("sink %s: %w", r.sinks[i].Sink.Name(), err))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.runDead(work, toDead); err != nil {
			fail(fmt.Errorf("dead-letter sink: %w", err))
		}
	}()

	commitDone := make(chan error, 1)
	go func() { commitDone <- r.runCommit(work, toCommit) }()

	wg.Wait()
	if err := <-commitDone; err != nil {
		fail(err)
	}
	if err := context.Cause(work); err != nil {
		return err
	}
	// Everything written is committed; flush buffering sinks last.
	var ferr error
	for _, s := range r.sinks {
		if f, ok := s.Sink.(Flusher); ok {
			if err := f.Flush(work); err != nil && ferr == nil {
				ferr = fmt.Errorf("sink %s: flush: %w", s.Sink.Name(), err)
			}
		}
	}
	return ferr
}

// readSource pulls batches until EOF or until ctx is cancelled; the source
// sees ctx, so a cancellation makes it flush its partial batch.
func (r *Runner) readSource(ctx, work context.Context, out chan<- *Batch) error {
	var seq uint64
	for {
		if work.Err() != nil {
			return nil
		}
		var b *Batch
		err := r.srcC.observe(ctx, 0, func(context.Context) (int, error) {
			var err error
			b, err = r.src.Next(ctx)
			return b.Rows() + lenDead(b), err
		})
		if b != nil {
			seq++
			b.Seq = seq
			r.batches.Add(1)
			r.received.Add(uint64(b.Rows() + len(b.Dead)))
			r.valid.Add(uint64(b.Rows()))
			r.m.inflight.Inc()
			if !r.forward(work, out, b) {
				return nil
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			return nil
		default:
			return fmt.Errorf("source: %w", err)
		}
		if ctx.Err() != nil && b == nil {
			return nil
		}
	}
}

func lenDead(b *Batch) int {
	if b == nil {
		return 0
	}
	return len(b.Dead)
}

// stageChains groups the stage indexes into the chains that each get a
// goroutine: one stage per chain, or one chain of all with SerialStages.
func (r *Runner) stageChains() [][]int {
	var chains [][]int
	for i := range r.stages {
		if r.cfg.SerialStages && len(chains) > 0 {
			chains[0] = append(chains[0], i)
			continue
		}
		chains = append(chains, []int{i})
	}
	return chains
}

// runStages runs the stages of chain (indexes into r.stages, in order) on
// every batch of in, in batch order, and passes each batch on.
func (r *Runner) runStages(work context.Context, chain []int, in <-chan *Batch, out chan<- *Batch) error {
	for b := range in {
		for _, i := range chain {
			st := r.stages[i]
			if err := r.stageC[i].observe(work, b.Rows(), func(ctx context.Context) (int, error) {
				err := st.Process(ctx, b)
				return b.Rows(), err
			}); err != nil {
				b.Release()
				r.m.inflight.Dec()
				return fmt.Errorf("stage %s: %w", st.Name(), err)
			}
		}
		if !r.forward(work, out, b) {
			return nil
		}
	}
	return nil
}

// forward passes b on to the next step, or releases it and reports false
// when the run is failing (work is done).
func (r *Runner) forward(work context.Context, out chan<- *Batch, b *Batch) bool {
	select {
	case out <- b:
		return true
	case <-work.Done():
		b.Release()
		r.m.inflight.Dec()
		return false
	}
}

// fanOut hands each batch that passed every stage to the committer, every
// sink and the dead-letter sink.
func (r *Runner) fanOut(work context.Context, in <-chan *Batch, toSink []chan *inflight, toDead, toCommit chan<- *inflight) {
	for b := range in {
		f := &inflight{b: b}
		f.wg.Add(len(toSink) + 1)
		// toCommit first: the committer then waits on f.wg, which the
		// sinks release, so commits follow batch order.
		select {
		case toCommit <- f:
		case <-work.Done():
			return
		}
		for _, c := range toSink {
			select {
			case c <- f:
			case <-work.Done():
				return
			}
		}
		select {
		case toDead <- f:
		case <-work.Done():
			return
		}
	}
}

func (r *Runner) runSink(work context.Context, i int, in <-chan *inflight) error {
	spec := r.sinks[i]
	c := r.sinkC[i]
	name := spec.Sink.Name()
	var sel []int
	var recs []Record
	drops := map[Reason]int{}
	drop := func(_ int, reason Reason) { drops[reason]++ }
	rf, _ := spec.Filter.(RecordFilter)
	events := true
	if et, ok := spec.Sink.(EventTaker); ok {
		events = et.TakesEvents()
	}
	for f := range in {
		b := f.b
		rows := b.Rows()
		if !events {
			rows = 0
		}
		written := 0
		if events {
			for _, d := range b.Drops {
				r.m.dropped.WithLabelValues(name, string(d.Reason)).Add(float64(d.Rows))
				r.dropped[i].Add(uint64(d.Rows))
			}
		}
		err := c.observe(work, rows, func(ctx context.Context) (int, error) {
			if rows > 0 {
				var s []int // nil: every row
				n := rows
				if spec.Filter != nil && !passesAll(spec.Filter, b) {
					clear(drops)
					sel = spec.Filter.Select(b, sel[:0], drop)
					s, n = sel, len(sel)
					for reason, k := range drops {
						r.m.dropped.WithLabelValues(name, string(reason)).Add(float64(k))
					}
					r.dropped[i].Add(uint64(rows - n))
				}
				if n > 0 {
					if err := spec.Sink.Write(ctx, b, s); err != nil {
						return 0, err
					}
				}
				written = n
			}
			if ms, ok := spec.Sink.(MergeSink); ok && len(b.Merges) > 0 {
				if err := ms.WriteMerges(ctx, b.Merges); err != nil {
					return 0, err
				}
			}
			if rs, ok := spec.Sink.(RecordSink); ok && len(b.Records) > 0 {
				recs = recs[:0]
				for k := range b.Records {
					rec := &b.Records[k]
					if !rs.WantsRecord(rec.Type) {
						continue
					}
					if rf != nil {
						if reason := rf.DropRecord(rec); reason != "" {
							r.m.recordsDropped.WithLabelValues(name, rec.Type, string(reason)).Inc()
							continue
						}
					}
					recs = append(recs, *rec)
				}
				if len(recs) > 0 {
					if err := rs.WriteRecords(ctx, recs); err != nil {
						return 0, err
					}
				}
			}
			return written, nil
		})
		if err != nil {
			return err
		}
		r.sent[i].Add(uint64(written))
		f.wg.Done()
	}
	return nil
}

func passesAll(f Filter, b *Batch) bool {
	p, ok := f.(AllPasser)
	return ok && p.PassesAll(b)
}

func (r *Runner) runDead(work context.Context, in <-chan *inflight) error {
	for f := range in {
		dead := f.b.Dead
		if len(dead) > 0 {
			if r.dead == nil {
				return fmt.Errorf("batch %d has %d rejected records and no dead-letter sink is configured", f.b.Seq, len(dead))
			}
			if err := r.deadC.observe(work, len(dead), func(ctx context.Context) (int, error) {
				return len(dead), r.dead.WriteDead(ctx, dead)
			}); err != nil {
				return err
			}
			for i := range dead {
				r.m.dead.WithLabelValues(string(dead[i].Reason)).Inc()
			}
			r.deadN.Add(uint64(len(dead)))
		}
		f.wg.Done()
	}
	return nil
}

func (r *Runner) runCommit(work context.Context, in <-chan *inflight) error {
	var err error
	for f := range in {
		if err == nil {
			done := make(chan struct{})
			go func() { f.wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-work.Done():
				err = context.Cause(work)
			}
		}
		if err == nil && len(f.b.Offsets) > 0 {
			err = r.commC.observe(work, 1, func(ctx context.Context) (int, error) {
				return 1, r.src.Commit(ctx, f.b.Offsets)
			})
			if err != nil {
				err = fmt.Errorf("commit batch %d: %w", f.b.Seq, err)
			}
		}
		if err == nil {
			r.committed.Add(1)
			r.m.committed.Inc()
			r.m.delay.Observe(time.Since(f.b.Created).Seconds())
		}
		// Release only after every sink is done with the record.
		if err == nil {
			f.b.Release()
		}
		r.m.inflight.Dec()
	}
	return err
}
