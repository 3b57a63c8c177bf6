package promtest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCounter(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a", "b"})
	reg.MustRegister(c)
	c.WithLabelValues("1", "2").Add(3)
	c.WithLabelValues("1", "").Add(5)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"x_total", map[string]string{"a": "1", "b": "2"}, 3},
		{"x_total", map[string]string{"a": "1", "b": ""}, 5},
		{"x_total", map[string]string{"a": "1"}, 0},           // not exactly the labels
		{"x_total", map[string]string{"a": "1", "c": "2"}, 0}, // another label name
		{"y_total", map[string]string{"a": "1", "b": "2"}, 0}, // another family
	} {
		if got := Counter(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}
