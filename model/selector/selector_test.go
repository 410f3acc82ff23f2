package selector

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
)

// grammarLabels is the endpoint used by the grammar table: own labels plus a namespace
// profile and a service-account profile, as Calico's Kubernetes backend builds them.
func grammarLabels() *Labels {
	return NewLabels(
		map[string]string{"app": "web", "tier": "frontend", "version": "v1.2", "empty": "", "q'uote": "x", "shadowed": "own"},
		map[string]string{"pcns.projectcalico.org/name": "shop", "env": "prod", "shadowed": "ns"},
		map[string]string{"pcsa.projectcalico.org/name": "default", "env": "staging", "sa-only": "yes"},
	)
}

func TestGrammar(t *testing.T) {
	labels := grammarLabels()
	tests := []struct {
		expr string
		want bool
	}{
		{"", true},
		{"all()", true},
		{"!all()", false},
		{"global()", true},
		{"!global()", false},
		{"has(app)", true},
		{"has(missing)", false},
		{"!has(missing)", true},
		{"has(pcns.projectcalico.org/name)", true},
		{"has(empty)", true},
		{"app == 'web'", true},
		{`app == "web"`, true},
		{"app == 'db'", false},
		{"missing == ''", false},
		{"empty == ''", true},
		{"app != 'db'", true},
		{"app != 'web'", false},
		{"missing != 'web'", true}, // != matches an absent label
		{"app in {'web', 'db'}", true},
		{"app in {'db'}", false},
		{"app in {}", false},
		{"missing in {'web'}", false},
		{"app not in {'db', 'cache'}", true},
		{"app not in {'web'}", false},
		{"missing not in {'web'}", true},
		{"app notin {'db'}", true},
		{"version contains '.2'", true},
		{"version contains 'x'", false},
		{"missing contains ''", false},
		{"version starts with 'v1'", true},
		{"version starts with 'v2'", false},
		{"version ends with '.2'", true},
		{"version ends with 'v1'", false},
		{"app == 'web' && tier == 'frontend'", true},
		{"app == 'web' && tier == 'backend'", false},
		{"app == 'db' || tier == 'frontend'", true},
		{"app == 'db' || tier == 'backend'", false},
		{"!(app == 'db' || tier == 'backend')", true},
		{"(app == 'db' || tier == 'frontend') && has(version)", true},
		{"app == 'db' || tier == 'frontend' && has(missing)", false}, // && binds tighter
		{"(app == 'web' || tier == 'x') && !has(missing)", true},
		{"!!has(app)", true},
		// Inheritance: own labels win, earlier parents win over later ones.
		{"shadowed == 'own'", true},
		{"shadowed == 'ns'", false},
		{"env == 'prod'", true},
		{"env == 'staging'", false},
		{"sa-only == 'yes'", true},
		{"pcsa.projectcalico.org/name == 'default' && pcns.projectcalico.org/name == 'shop'", true},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			sel, err := Parse(tt.expr)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.expr, err)
			}
			if got := sel.EvaluateLabels(labels); got != tt.want {
				t.Errorf("%q on %v = %v, want %v", tt.expr, labels.Map(), got, tt.want)
			}
			// Same verdict through Calico's map path on the flattened labels.
			if got := sel.EvaluateLabels(parser.MapAsLabels(labels.Map())); got != tt.want {
				t.Errorf("%q through MapAsLabels = %v, want %v", tt.expr, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, expr := range []string{
		"app ==",
		"app = 'web'",
		"== 'web'",
		"app == 'web",
		"has(app",
		"has()",
		"app in {'a' 'b'}",
		"app in 'a'",
		"(app == 'a'",
		"app == 'a')",
		"app == 'a' &&",
		"app == 'a' & b == 'c'",
		"app contains",
		"app starts 'x'",
		"all(",
		"app == web",
		"&&",
		`"app" == 'web'`, // a quoted string is a value, never a label name
		"q'uote == 'x'",
	} {
		if sel, err := Parse(expr); err == nil {
			t.Errorf("Parse(%q) = %q, want an error", expr, sel.String())
		}
	}
}

func TestCanonicalForm(t *testing.T) {
	tests := []struct{ expr, want string }{
		{"", "all()"},
		{"  has( app ) ", "has(app)"},
		{"a=='b'", `a == "b"`},
		{`a == "it's"`, `a == "it's"`},
		{`a == 'say "hi"'`, `a == 'say "hi"'`},
		{"a in {'y','x'}", `a in {"x", "y"}`},
		{"a notin {'x'}", `a not in {"x"}`},
		{"(a == 'b')", `a == "b"`},
		{"a == 'b' && (c == 'd' || e == 'f')", `(a == "b" && (c == "d" || e == "f"))`},
	}
	for _, tt := range tests {
		sel := MustParse(tt.expr)
		if diff := cmp.Diff(tt.want, sel.String()); diff != "" {
			t.Errorf("Parse(%q).String() (-want +got):\n%s", tt.expr, diff)
		}
		again := MustParse(sel.String())
		if again.UniqueID() != sel.UniqueID() {
			t.Errorf("%q: UniqueID changed across re-parse: %s vs %s", tt.expr, sel.UniqueID(), again.UniqueID())
		}
	}
}

func TestLabelsInheritance(t *testing.T) {
	own := map[string]string{"a": "own", "b": "own"}
	p1 := map[string]string{"b": "p1", "c": "p1", "d": "p1"}
	p2 := map[string]string{"c": "p2", "d": "p2", "e": "p2"}
	want := map[string]string{"a": "own", "b": "own", "c": "p1", "d": "p1", "e": "p2"}
	l := NewLabels(own, p1, p2)
	if diff := cmp.Diff(want, l.Map()); diff != "" {
		t.Errorf("flattened labels (-want +got):\n%s", diff)
	}
	if l.Len() != len(want) {
		t.Errorf("Len() = %d, want %d", l.Len(), len(want))
	}
	for k, v := range want {
		if got, ok := l.Get(k); !ok || got != v {
			t.Errorf("Get(%q) = %q, %v; want %q, true", k, got, ok, v)
		}
	}
	if _, ok := l.Get("zz"); ok {
		t.Errorf("Get(zz) present")
	}
}

func TestLabelsLargeSetUsesSameSemantics(t *testing.T) {
	own := map[string]string{}
	parent := map[string]string{}
	for i := range 40 {
		own["k"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "own"
		parent["p"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "parent"
	}
	parent["kaa"] = "parent"
	l := NewLabels(own, parent)
	if l.index == nil {
		t.Fatalf("a %d-label set should use the map index", l.Len())
	}
	if got, _ := l.Get("kaa"); got != "own" {
		t.Errorf("kaa = %q, want own", got)
	}
	if got, _ := l.Get("pbb"); got != "parent" {
		t.Errorf("pbb = %q, want parent", got)
	}
	if !MustParse("kaa == 'own' && pnb == 'parent' && !has(zz)").EvaluateLabels(l) {
		t.Errorf("selector on large label set did not match")
	}
}

func TestLabelsNoAlloc(t *testing.T) {
	l := grammarLabels()
	sels := []*Selector{
		MustParse("has(sa-only)"),
		MustParse("app == 'web'"),
		MustParse("app in {'web', 'db'} && has(tier)"),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, s := range sels {
			s.EvaluateLabels(l)
		}
	})
	if allocs != 0 {
		t.Errorf("evaluation allocates %v times per run, want 0", allocs)
	}
}

func TestDoubleNegationIsNormalised(t *testing.T) {
	for _, expr := range []string{"!(!a == 'b')", "!(!(!(!has(a))))", "!(!(a == 'x' && b == 'y'))", "c == '!!' && !(!has(d))"} {
		sel := MustParse(expr)
		again := MustParse(sel.String())
		if sel.String() != again.String() || sel.UniqueID() != again.UniqueID() {
			t.Errorf("%q: String %q / ID %s, re-parsed %q / ID %s", expr, sel.String(), sel.UniqueID(), again.String(), again.UniqueID())
		}
		if strings.Contains(strings.ReplaceAll(sel.String(), `"!!"`, ""), "!!") {
			t.Errorf("%q: canonical form %q still holds a double negation", expr, sel.String())
		}
	}
}
