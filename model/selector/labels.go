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
	return NewLabelsWith(nil, own, parents...)
}

// NewLabelsWith is NewLabels interning through in (nil: the global table directly), for
// callers that build many label sets at once.
func NewLabelsWith(in *Interner, own map[string]string, parents ...map[string]string) *Labels {
	n := len(own)
	for _, p := range parents {
		n += len(p)
	}
	// One backing array for names and values: half the allocations.
	buf := make([]uniquestr.Handle, 2*n)
	l := &Labels{names: buf[:0:n], values: buf[n : n : 2*n]}
	for k, v := range own {
		l.names = append(l.names, in.Make(k))
		l.values = append(l.values, in.Make(v))
	}
	// Own labels are distinct map keys; a parent's label counts only if no earlier map has
	// it. Looking the name up in those maps costs no interning for the labels that lose.
	for i, p := range parents {
		for k, v := range p {
			if _, dup := own[k]; dup || definedIn(parents[:i], k) {
				continue
			}
			l.names = append(l.names, in.Make(k))
			l.values = append(l.values, in.Make(v))
		}
	}
	if len(l.names) > linearMax {
		l.index = make(map[uniquestr.Handle]uniquestr.Handle, len(l.names))
		for i, k := range l.names {
			l.index[k] = l.values[i]
		}
	}
	return l
}

func definedIn(maps []map[string]string, k string) bool {
	for _, m := range maps {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// Interner caches interned handles by string for one bulk computation: a lookup in a
// private map costs a fraction of unique.Make's global, weakly referenced table. It holds
// its strings alive while it is reachable; not safe for concurrent use.
type Interner struct{ m map[string]uniquestr.Handle }

// NewInterner returns an empty Interner.
func NewInterner() *Interner { return &Interner{m: map[string]uniquestr.Handle{}} }

// Make returns s's handle; a nil Interner interns through the global table.
func (in *Interner) Make(s string) uniquestr.Handle {
	if in == nil {
		return uniquestr.Make(s)
	}
	h, ok := in.m[s]
	if !ok {
		h = uniquestr.Make(s)
		in.m[s] = h
	}
	return h
}

// Len returns the number of strings cached.
func (in *Interner) Len() int { return len(in.m) }

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

// Handles iterates the effective labels as interned handles, in no particular order.
func (l *Labels) Handles() iter.Seq2[uniquestr.Handle, uniquestr.Handle] {
	return func(yield func(uniquestr.Handle, uniquestr.Handle) bool) {
		for i, k := range l.names {
			if !yield(k, l.values[i]) {
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
