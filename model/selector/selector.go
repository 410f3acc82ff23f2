// Package selector is Calico's label-selector language for felis: parsing, canonical form,
// stable IDs and fast evaluation against endpoint labels with profile inheritance. It uses
// Calico's own parser, so accept/reject and evaluation agree with Felix by construction.
package selector

import (
	cs "github.com/projectcalico/calico/libcalico-go/lib/selector"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"
)

// Selector is a parsed Calico selector. String() is its canonical form and UniqueID() a
// stable hash of that form.
type Selector = parser.Selector

// Parse parses a selector expression. The empty string selects everything ("all()").
func Parse(expr string) (*Selector, error) { return cs.Parse(expr) }

// MustParse is Parse for expressions known to be valid (tests and constants).
func MustParse(expr string) *Selector {
	s, err := cs.Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}
