package selector

import (
	"strings"

	cs "github.com/projectcalico/calico/libcalico-go/lib/selector"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
)

// Selector is a parsed Calico selector. String() is its canonical form and UniqueID() a
// stable hash of that form.
type Selector = parser.Selector

// Parse parses a selector expression. The empty string selects everything ("all()").
//
// The result's String() is a fixed point: parsing it again gives the same String() and
// UniqueID(). Calico's parser alone does not guarantee that: it collapses "!!x" while
// parsing but prints "!(!x)" as "!!x", so that selector's canonical form and ID change on
// the next parse. Parse re-parses such a form once (a run of "!" collapses completely), which
// changes neither the accepted language nor evaluation.
func Parse(expr string) (*Selector, error) {
	sel, err := cs.Parse(expr)
	if err != nil {
		return nil, err
	}
	if canon := sel.String(); strings.Contains(canon, "!!") {
		if again, err := cs.Parse(canon); err == nil {
			return again, nil
		}
	}
	return sel, nil
}

// MustParse is Parse for expressions known to be valid (tests and constants).
func MustParse(expr string) *Selector {
	s, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}
