package selector

import (
	"maps"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/projectcalico/calico/lib/std/uniquestr"
)

// TestNewLabelsWithInterner: interning through an Interner gives the same effective labels
// and the same handles as the global table, and the Interner caches each string once.
func TestNewLabelsWithInterner(t *testing.T) {
	tests := []struct {
		name    string
		own     map[string]string
		parents []map[string]string
		want    map[string]string
	}{
		{"own only", map[string]string{"app": "web"}, nil, map[string]string{"app": "web"}},
		{"own wins", map[string]string{"app": "web"}, []map[string]string{{"app": "db", "env": "prod"}}, map[string]string{"app": "web", "env": "prod"}},
		{"earlier parent wins", nil, []map[string]string{{"env": "prod"}, {"env": "dev", "team": "a"}}, map[string]string{"env": "prod", "team": "a"}},
		{"nil parent", map[string]string{"a": "1"}, []map[string]string{nil, {"a": "2", "b": "2"}}, map[string]string{"a": "1", "b": "2"}},
		{"empty", nil, nil, map[string]string{}},
	}
	in := NewInterner()
	for _, tt := range tests {
		got := NewLabelsWith(in, tt.own, tt.parents...)
		if diff := cmp.Diff(tt.want, got.Map()); diff != "" {
			t.Errorf("%s: effective labels (-want +got):\n%s", tt.name, diff)
		}
		if diff := cmp.Diff(NewLabels(tt.own, tt.parents...).Map(), got.Map()); diff != "" {
			t.Errorf("%s: NewLabelsWith differs from NewLabels (-NewLabels +NewLabelsWith):\n%s", tt.name, diff)
		}
		n := 0
		for k, v := range got.Handles() {
			n++
			if k != uniquestr.Make(k.Value()) || v != uniquestr.Make(v.Value()) {
				t.Errorf("%s: handle for %s=%s is not the global one", tt.name, k.Value(), v.Value())
			}
			if h, ok := got.GetHandle(k); !ok || h != v {
				t.Errorf("%s: GetHandle(%s) = %v, %v; want the value Handles gave", tt.name, k.Value(), h.Value(), ok)
			}
		}
		if n != got.Len() {
			t.Errorf("%s: Handles gave %d labels, Len says %d", tt.name, n, got.Len())
		}
	}
	// Every distinct name and value of the effective labels above, once.
	distinct := map[string]bool{}
	for _, tt := range tests {
		for k, v := range maps.All(tt.want) {
			distinct[k], distinct[v] = true, true
		}
	}
	if in.Len() != len(distinct) {
		t.Errorf("Interner holds %d strings, want the %d distinct effective names and values", in.Len(), len(distinct))
	}
	var nilIn *Interner
	if nilIn.Make("x") != uniquestr.Make("x") {
		t.Error("a nil Interner does not intern through the global table")
	}
}
