package bench

import (
	"context"

	"github.com/cdpstream/cdpstream/engine"
)

type batchView struct {
	rows    int
	reasons []string
}

func viewOf(next func(context.Context) (*engine.Batch, error)) func(context.Context) (*batchView, error) {
	return func(ctx context.Context) (*batchView, error) {
		b, err := next(ctx)
		if b == nil {
			return nil, err
		}
		defer b.Release()
		v := &batchView{rows: b.Rows()}
		for _, d := range b.Dead {
			v.reasons = append(v.reasons, string(d.Reason))
		}
		return v, err
	}
}
