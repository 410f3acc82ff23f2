package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/felis-dev/felis/datastore"
	_ "github.com/felis-dev/felis/datastore/file" // registers file:PATH
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// openStore loads a datastore into a fresh store. Invalid resources are reported on stderr
// (they are left out; everything else loads) and returned.
func openStore(ctx context.Context, spec string) (*store.Store, datastore.Problems, error) {
	src, err := datastore.Open(spec)
	if err != nil {
		return nil, nil, err
	}
	st := store.New()
	problems, err := src.Load(ctx, st)
	if err != nil {
		return nil, problems, fmt.Errorf("--datastore %s: %w", spec, err)
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p.String())
	}
	return st, problems, nil
}

// clusterNodes lists every node felis knows of: Node resources and nodes named by endpoints.
func clusterNodes(v *store.View) []string {
	seen := map[string]bool{}
	for n := range store.List[*model.Node](v, model.KindNode) {
		seen[n.Key.Name] = true
	}
	for w := range store.List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
		if w.Node != "" {
			seen[w.Node] = true
		}
	}
	nodes := make([]string, 0, len(seen))
	for n := range seen {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return nodes
}

// nodeResources lists the nodes that have a Node resource (cheap: no endpoint scan).
func nodeResources(v *store.View) []string {
	var nodes []string
	for n := range store.List[*model.Node](v, model.KindNode) {
		nodes = append(nodes, n.Key.Name)
	}
	return nodes
}

// deriveAll derives the snapshot of every node of the cluster.
func deriveAll(v *store.View, opts derive.Options) ([]*snapshot.Snapshot, error) {
	var out []*snapshot.Snapshot
	for _, n := range clusterNodes(v) {
		s, err := derive.Derive(v, n, opts)
		if err != nil {
			return nil, fmt.Errorf("derive node %s: %w", n, err)
		}
		out = append(out, s)
	}
	return out, nil
}
