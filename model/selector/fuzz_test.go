package selector

import (
	"maps"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/projectcalico/calico/lib/std/uniquestr"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/tokenizer"
)

// byteSource turns fuzz input into choices; once exhausted it keeps answering 0, which
// always picks the shortest production, so every input generates a finite selector.
type byteSource struct{ b []byte }

func (s *byteSource) next(n int) int {
	if len(s.b) == 0 || n <= 1 {
		return 0
	}
	c := int(s.b[0])
	s.b = s.b[1:]
	return c % n
}

var (
	genNames  = []string{"app", "tier", "env", "k8s-app", "a.b/c", "x_y", "pcns.projectcalico.org/name", "projectcalico.org/namespace"}
	genValues = []string{"", "web", "db", "v1", "v1.2", "it's", `say "hi"`, "a b", "web-1", "we", "b"}
)

// quote quotes a value the way a user might: single or double quotes, whichever the value
// allows (Calico strings have no escapes).
func quote(src *byteSource, v string) string {
	hasSingle, hasDouble := strings.Contains(v, "'"), strings.Contains(v, `"`)
	switch {
	case hasSingle:
		return `"` + v + `"`
	case hasDouble:
		return "'" + v + "'"
	case src.next(2) == 0:
		return "'" + v + "'"
	default:
		return `"` + v + `"`
	}
}

func space(src *byteSource) string { return []string{"", " ", "  ", "\t"}[src.next(4)] }

// genSelector writes a random, syntactically valid selector in a non-canonical spelling.
func genSelector(src *byteSource, depth int) string {
	var b strings.Builder
	genOr(src, &b, depth)
	return b.String()
}

func genOr(src *byteSource, b *strings.Builder, depth int) {
	genAnd(src, b, depth)
	for range src.next(3) {
		b.WriteString(space(src) + "||" + space(src))
		genAnd(src, b, depth)
	}
}

func genAnd(src *byteSource, b *strings.Builder, depth int) {
	genUnary(src, b, depth)
	for range src.next(3) {
		b.WriteString(space(src) + "&&" + space(src))
		genUnary(src, b, depth)
	}
}

func genUnary(src *byteSource, b *strings.Builder, depth int) {
	choice := src.next(6)
	if depth <= 0 {
		choice = 5
	}
	switch choice {
	case 0:
		b.WriteString("!" + space(src))
		genUnary(src, b, depth-1)
	case 1:
		b.WriteString("(" + space(src))
		genOr(src, b, depth-1)
		b.WriteString(space(src) + ")")
	default:
		genLeaf(src, b)
	}
}

func genLeaf(src *byteSource, b *strings.Builder) {
	name := genNames[src.next(len(genNames))]
	value := func() string { return quote(src, genValues[src.next(len(genValues))]) }
	set := func() string {
		var vals []string
		for range src.next(4) {
			vals = append(vals, value())
		}
		return "{" + space(src) + strings.Join(vals, ","+space(src)) + space(src) + "}"
	}
	switch src.next(12) {
	case 0:
		b.WriteString("has(" + space(src) + name + space(src) + ")")
	case 1:
		b.WriteString("all()")
	case 2:
		b.WriteString("global()")
	case 3:
		b.WriteString(name + space(src) + "==" + space(src) + value())
	case 4:
		b.WriteString(name + space(src) + "!=" + space(src) + value())
	case 5:
		b.WriteString(name + " in " + set())
	case 6:
		b.WriteString(name + " not in " + set())
	case 7:
		b.WriteString(name + " notin " + set())
	case 8:
		b.WriteString(name + " contains " + value())
	case 9:
		b.WriteString(name + " starts with " + value())
	case 10:
		b.WriteString(name + " ends with " + value())
	default:
		b.WriteString(name + space(src) + "==" + space(src) + value())
	}
}

// genLabelSets draws an endpoint's own labels and up to three parents' labels.
func genLabelSets(src *byteSource, names, values []string) (own map[string]string, parents []map[string]string) {
	gen := func() map[string]string {
		m := map[string]string{}
		for range src.next(len(names) + 1) {
			m[names[src.next(len(names))]] = values[src.next(len(values))]
		}
		return m
	}
	own = gen()
	for range src.next(4) {
		parents = append(parents, gen())
	}
	return own, parents
}

// flattenReference is the obvious definition of inheritance: apply the last parent first,
// then the earlier ones, then the endpoint's own labels, each overwriting.
func flattenReference(own map[string]string, parents []map[string]string) map[string]string {
	m := map[string]string{}
	for i := len(parents) - 1; i >= 0; i-- {
		for k, v := range parents[i] {
			m[k] = v
		}
	}
	for k, v := range own {
		m[k] = v
	}
	return m
}

// onTheFly is Felix's inheritance shape: look in the endpoint's labels, then each parent in
// order, at evaluation time.
type onTheFly struct {
	own     parser.MapAsLabels
	parents []parser.MapAsLabels
}

func (o onTheFly) GetHandle(name uniquestr.Handle) (uniquestr.Handle, bool) {
	if _, ok := o.own[name.Value()]; ok {
		return o.own.GetHandle(name)
	}
	for _, p := range o.parents {
		if _, ok := p[name.Value()]; ok {
			return p.GetHandle(name)
		}
	}
	return uniquestr.Handle{}, false
}

// checkDifferential fails if the wrapper disagrees with Calico's map path (on the reference
// flattening) or with Felix-style on-the-fly inheritance, or if the selector's canonical
// form does not round-trip.
func checkDifferential(t *testing.T, expr string, own map[string]string, parents []map[string]string) {
	t.Helper()
	sel, err := Parse(expr)
	if err != nil {
		t.Fatalf("generated selector %q does not parse: %v", expr, err)
	}
	checkRoundTrip(t, sel, own, parents)
	labels := NewLabels(own, parents...)
	flat := flattenReference(own, parents)
	if got := labels.Map(); !maps.Equal(flat, got) {
		t.Fatalf("own %v parents %v: flattening (-reference +wrapper):\n%s", own, parents, cmp.Diff(flat, got))
	}
	fly := onTheFly{own: own}
	for _, p := range parents {
		fly.parents = append(fly.parents, p)
	}
	got := sel.EvaluateLabels(labels)
	if want := sel.EvaluateLabels(parser.MapAsLabels(flat)); got != want {
		t.Fatalf("%q on own %v parents %v: wrapper %v, MapAsLabels %v", expr, own, parents, got, want)
	}
	if want := sel.EvaluateLabels(fly); got != want {
		t.Fatalf("%q on own %v parents %v: wrapper %v, on-the-fly inheritance %v", expr, own, parents, got, want)
	}
}

// checkRoundTrip fails unless parse(String()) has the same canonical form, the same
// UniqueID and the same verdict on the given labels.
func checkRoundTrip(t *testing.T, sel *Selector, own map[string]string, parents []map[string]string) {
	t.Helper()
	again, err := Parse(sel.String())
	if err != nil {
		t.Fatalf("canonical form %q does not re-parse: %v", sel.String(), err)
	}
	if again.String() != sel.String() {
		t.Fatalf("canonical form not stable:\n first  %q\n second %q", sel.String(), again.String())
	}
	if again.UniqueID() != sel.UniqueID() {
		t.Fatalf("%q: UniqueID %s after re-parse, was %s", sel.String(), again.UniqueID(), sel.UniqueID())
	}
	labels := NewLabels(own, parents...)
	if a, b := sel.EvaluateLabels(labels), again.EvaluateLabels(labels); a != b {
		t.Fatalf("%q on %v: %v before round trip, %v after", sel.String(), labels.Map(), a, b)
	}
}

func TestDifferentialGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 96)
	for range 20000 {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		src := &byteSource{b: buf}
		expr := genSelector(src, 3)
		own, parents := genLabelSets(src, genNames, genValues)
		checkDifferential(t, expr, own, parents)
	}
}

// FuzzDifferential generates a selector and an endpoint with inherited labels from the
// input and checks the wrapper against Calico's MapAsLabels path and the round trip.
func FuzzDifferential(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 1, 5, 2, 9, 7, 4, 4, 4, 1, 8, 2, 3})
	f.Add([]byte("a selector made of arbitrary bytes, with parents"))
	f.Fuzz(func(t *testing.T, data []byte) {
		src := &byteSource{b: data}
		expr := genSelector(src, 4)
		own, parents := genLabelSets(src, genNames, genValues)
		checkDifferential(t, expr, own, parents)
	})
}

// FuzzRoundTrip parses arbitrary text; whatever Calico accepts must round-trip through its
// canonical form and evaluate the same, on labels drawn from the selector's own words.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{
		"", "all()", "!global()", "has(a)", "a == 'b'", `a != "b"`, "a in {'x', \"y\"}", "a notin {}",
		"a contains 'c' && b starts with 'd' || !(c ends with 'e')", "((a=='b'))", "a.b/c-d_e == 'v'",
	} {
		f.Add(s, []byte{1, 2, 3, 4, 5, 6, 7, 8})
	}
	f.Fuzz(func(t *testing.T, expr string, labelChoices []byte) {
		sel, err := Parse(expr)
		if err != nil {
			return
		}
		names, values := []string{"x"}, []string{""}
		if toks, err := tokenizer.Tokenize(expr); err == nil {
			for _, tok := range toks {
				switch tok.Kind {
				case tokenizer.TokLabel:
					names = append(names, tok.Value)
				case tokenizer.TokStringLiteral:
					values = append(values, tok.Value, tok.Value+"x", "x"+tok.Value)
				}
			}
		}
		own, parents := genLabelSets(&byteSource{b: labelChoices}, names, values)
		checkRoundTrip(t, sel, own, parents)
		flat := flattenReference(own, parents)
		if a, b := sel.EvaluateLabels(NewLabels(own, parents...)), sel.EvaluateLabels(parser.MapAsLabels(flat)); a != b {
			t.Fatalf("%q on %v: wrapper %v, MapAsLabels %v", expr, flat, a, b)
		}
	})
}
