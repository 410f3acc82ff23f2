package nftables

import (
	"fmt"
	"strings"

	"github.com/felis-dev/felis/appliers/nftables/render"
)

// Verb is what an Op does.
type Verb string

// Op verbs. Chain replacement flushes the chain and adds its rules in the same batch.
const (
	AddTable          Verb = "add table"
	AddSet            Verb = "add set"
	DeleteSet         Verb = "delete set"
	FlushSet          Verb = "flush set"
	AddSetElements    Verb = "add element"
	DeleteSetElements Verb = "delete element"
	AddMap            Verb = "add map"
	DeleteMap         Verb = "delete map"
	AddMapElements    Verb = "add map element"
	DeleteMapElements Verb = "delete map element"
	AddChain          Verb = "add chain"
	ReplaceChain      Verb = "replace chain"
	DeleteChain       Verb = "delete chain"
)

// Op is one kernel operation on a felis table. Table is the table, Name the set, map or
// chain it acts on; Set, Map and Chain carry the full object for adds and replaces; Elements
// and MapElements the elements an element op adds or deletes.
type Op struct {
	Verb        Verb
	Table       render.TableID
	Name        string
	Set         *render.Set
	Map         *render.Map
	Chain       *render.Chain
	Elements    []render.Element
	MapElements []render.MapElement
}

// String renders the op in nft syntax, one line; chain ops summarise their rules by count
// and content hash.
func (o Op) String() string {
	tbl := "inet " + o.Table.Name()
	switch o.Verb {
	case AddTable:
		return "add table " + tbl
	case AddSet:
		s := fmt.Sprintf("add set %s %s { %s; }", tbl, o.Name, o.Set.Definition())
		if len(o.Set.Elements) > 0 {
			s += fmt.Sprintf("; add element %s %s %s", tbl, o.Name, elements(o.Set.Elements))
		}
		return s
	case AddSetElements, DeleteSetElements:
		return fmt.Sprintf("%s %s %s %s", o.Verb, tbl, o.Name, elements(o.Elements))
	case AddMap:
		s := fmt.Sprintf("add map %s %s { type %s : verdict; }", tbl, o.Name, o.Map.KeyType())
		if len(o.Map.Elements) > 0 {
			s += fmt.Sprintf("; add element %s %s %s", tbl, o.Name, mapElements(o.Map.Elements))
		}
		return s
	case AddMapElements:
		return fmt.Sprintf("add element %s %s %s", tbl, o.Name, mapElements(o.MapElements))
	case DeleteMapElements:
		return fmt.Sprintf("delete element %s %s %s", tbl, o.Name, mapElements(o.MapElements))
	case AddChain, ReplaceChain:
		base := ""
		if o.Chain.Base != nil {
			base = " { " + o.Chain.Base.String() + " }"
		}
		return fmt.Sprintf("%s %s %s%s # %d rules, hash %s", o.Verb, tbl, o.Name, base, len(o.Chain.Rules), o.Chain.Hash)
	case DeleteSet, FlushSet, DeleteChain:
		return fmt.Sprintf("%s %s %s", o.Verb, tbl, o.Name)
	case DeleteMap:
		return fmt.Sprintf("delete map %s %s", tbl, o.Name)
	}
	return fmt.Sprintf("%s %s %s", o.Verb, tbl, o.Name)
}

func elements(es []render.Element) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func mapElements(es []render.MapElement) string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.String()
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

// short is the op's String cut to a length fit for an error message.
func (o Op) short() string {
	s := o.String()
	if len(s) > 160 {
		return s[:150] + fmt.Sprintf("... (%d elements)", len(o.Elements)+len(o.MapElements)+elementCount(o))
	}
	return s
}

func elementCount(o Op) int {
	switch {
	case o.Set != nil && o.Verb == AddSet:
		return len(o.Set.Elements)
	case o.Map != nil:
		return len(o.Map.Elements)
	}
	return 0
}

// Script renders ops one per line, the form `felis plan` prints.
func Script(ops []Op) string {
	var b strings.Builder
	for _, o := range ops {
		b.WriteString(o.String())
		b.WriteByte('\n')
	}
	return b.String()
}
