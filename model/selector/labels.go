package selector

import (
	"iter"

	"github.com/projectcalico/calico/lib/std/uniquestr"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
)

// linearMax is the largest label set searched by a linear scan over interned handles; larger
// sets get a map. Comparing two handles is one pointer comparison, so a scan of a typical
// pod's dozen labels beats hashing.
const linearMax = 16

// Labels is an endpoint's effective label set: its own labels plus those inherited from its
// parents (profiles' LabelsToApply), flattened once and interned so that evaluation does no
// string work and no allocation. It implements Calico's parser.Labels and is immutable:
// build a new one when the endpoint or one of its parents changes (Felix looks parents up at
// evaluation time instead; the verdicts are the same).
type Labels struct {
	names  []uniquestr.Handle
	values []uniquestr.Handle
	index  map[uniquestr.Handle]uniquestr.Handle // only when len(names) > linearMax
}

var _ parser.Labels = (*Labels)(nil)

// NewLabels flattens an endpoint's own labels and its parents' labels the way Felix's label
// inheritance does: an own label wins over any parent's, and an earlier parent wins over a
// later one.
func NewLabels(own map[string]string, parents ...map[string]string) *Labels {
	n := len(own)
	for _, p := range parents {
		n += len(p)
	}
	l := &Labels{names: make([]uniquestr.Handle, 0, n), values: make([]uniquestr.Handle, 0, n)}
	seen := make(map[string]struct{}, n)
	add := func(m map[string]string) {
		for k, v := range m {
			if _, dup := seen[k]; dup {
				continue
			}
			seen[k] = struct{}{}
			l.names = append(l.names, uniquestr.Make(k))
			l.values = append(l.values, uniquestr.Make(v))
		}
	}
	add(own)
	for _, p := range parents {
		add(p)
	}
	if len(l.names) > linearMax {
		l.index = make(map[uniquestr.Handle]uniquestr.Handle, len(l.names))
		for i, k := range l.names {
			l.index[k] = l.values[i]
		}
	}
	return l
}

// GetHandle implements parser.Labels: the interned value of the named label, if present.
func (l *Labels) GetHandle(name uniquestr.Handle) (uniquestr.Handle, bool) {
	if l.index != nil {
		v, ok := l.index[name]
		return v, ok
	}
	for i, k := range l.names {
		if k == name {
			return l.values[i], true
		}
	}
	return uniquestr.Handle{}, false
}

// Get returns the value of a label (for callers outside the hot path).
func (l *Labels) Get(name string) (string, bool) {
	v, ok := l.GetHandle(uniquestr.Make(name))
	if !ok {
		return "", false
	}
	return v.Value(), true
}

// Len returns the number of effective labels.
func (l *Labels) Len() int { return len(l.names) }

// All iterates the effective labels in no particular order.
func (l *Labels) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for i, k := range l.names {
			if !yield(k.Value(), l.values[i].Value()) {
				return
			}
		}
	}
}

// Map returns the effective labels as a new map.
func (l *Labels) Map() map[string]string {
	m := make(map[string]string, len(l.names))
	for k, v := range l.All() {
		m[k] = v
	}
	return m
}
