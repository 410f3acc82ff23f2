package datastore

import (
	"context"
	"fmt"
	"strings"

	"github.com/felis-dev/felis/model/store"
)

// Source feeds one datastore into a store.
type Source interface {
	// Name is the source name stamped into every object's model.Source.Name.
	Name() string
	// Load reads the complete current state into st, reports every invalid resource through
	// the returned Problems, and marks the source in sync. It does not watch.
	Load(ctx context.Context, st *store.Store) (Problems, error)
	// Watch keeps st up to date until ctx ends, applying only differences. Call after Load.
	Watch(ctx context.Context, st *store.Store, report func(Problems)) error
}

// Problem is one invalid resource: "source:line: Kind namespace/name: field.path: reason".
type Problem struct {
	Where    string // file:line or resource URL
	Resource string // "Kind namespace/name" or "Kind name"; "" when the document has no identity
	Field    string // field path, e.g. spec.ingress[0].source.selector
	Reason   string
}

// String renders the problem in the format felis validate prints.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.Where)
	b.WriteString(": ")
	if p.Resource != "" {
		b.WriteString(p.Resource)
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// Problems is a list of invalid resources.
type Problems []Problem

// Opener builds a source from the part of the --datastore flag after its scheme.
type Opener func(arg string) (Source, error)

var openers = map[string]Opener{}

// Register makes a datastore scheme available to Open. Called from the source packages' init.
func Register(scheme string, o Opener) { openers[scheme] = o }

// Open parses a --datastore value: "file:PATH" (also a bare PATH), "kubernetes", "etcd:URL".
func Open(spec string) (Source, error) {
	scheme, arg, found := strings.Cut(spec, ":")
	if !found {
		if _, ok := openers[spec]; ok {
			scheme, arg = spec, ""
		} else {
			scheme, arg = "file", spec
		}
	}
	o, ok := openers[scheme]
	if !ok {
		return nil, fmt.Errorf("--datastore %q: unknown datastore %q (want file:PATH, kubernetes or etcd:URL)", spec, scheme)
	}
	return o(arg)
}
