package derive

import (
	"slices"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// serviceDeriver is the Deriver's incremental services state: each service's derived entry
// is kept and recomputed only when the service, one of its EndpointSlices, or the node's
// addresses or node-port ranges change, so an EndpointSlice update costs one service.
type serviceDeriver struct {
	slices   map[model.Key]*model.EndpointSlice
	bySvc    map[string]map[model.Key]struct{} // service ID -> its slices
	dirty    map[string]bool                   // service IDs to recompute
	envDirty bool                              // node addresses or ranges may have changed
	env      serviceEnv
	entries  map[string]snapshot.Service // services with a frontend, by ID
	ids      []string                    // sorted keys of entries
}

func newServiceDeriver() *serviceDeriver {
	return &serviceDeriver{
		slices:   map[model.Key]*model.EndpointSlice{},
		bySvc:    map[string]map[model.Key]struct{}{},
		dirty:    map[string]bool{},
		envDirty: true,
		entries:  map[string]snapshot.Service{},
	}
}

// changed folds one changed key (current value in v) into the state.
func (sd *serviceDeriver) changed(v *store.View, node string, k model.Key) {
	switch k.Kind {
	case model.KindService:
		sd.dirty[ServiceID(k.Namespace, k.Name)] = true
	case model.KindEndpointSlice:
		if old, ok := sd.slices[k]; ok && old.ServiceName != "" {
			id := ServiceID(k.Namespace, old.ServiceName)
			removeFrom(sd.bySvc, id, k)
			sd.dirty[id] = true
		}
		delete(sd.slices, k)
		if es, ok := store.Get[*model.EndpointSlice](v, k); ok {
			sd.slices[k] = es
			if es.ServiceName != "" {
				id := ServiceID(k.Namespace, es.ServiceName)
				addTo(sd.bySvc, id, k)
				sd.dirty[id] = true
			}
		}
	case model.KindNode:
		sd.envDirty = sd.envDirty || k.Name == node
	case model.KindFelixConfiguration:
		sd.envDirty = sd.envDirty || k.Name == "default" || k.Name == "node."+node
	}
}

// slicesOf returns a service's EndpointSlices in key order.
func (sd *serviceDeriver) slicesOf(id string) []*model.EndpointSlice {
	keys := make(map[model.Key]bool, len(sd.bySvc[id]))
	for k := range sd.bySvc[id] {
		keys[k] = true
	}
	out := make([]*model.EndpointSlice, 0, len(keys))
	for _, k := range sortedKeys(keys) {
		out = append(out, sd.slices[k])
	}
	return out
}

// assemble recomputes what changed and returns every service in ID order.
func (sd *serviceDeriver) assemble(v *store.View, node string) []snapshot.Service {
	if sd.envDirty {
		env := readServiceEnv(v, node)
		if !slices.Equal(env.nodeAddrs, sd.env.nodeAddrs) || !slices.Equal(env.ranges, sd.env.ranges) {
			// NodePort frontends of every service may move.
			for svc := range store.List[*model.Service](v, model.KindService) {
				sd.dirty[ServiceID(svc.Key.Namespace, svc.Key.Name)] = true
			}
		}
		sd.env, sd.envDirty = env, false
	}
	for id := range sd.dirty {
		ns, name, _ := strings.Cut(id, "/")
		svc, ok := store.Get[*model.Service](v, model.Key{Kind: model.KindService, Namespace: ns, Name: name})
		var entry snapshot.Service
		if ok {
			esl := make([]*model.EndpointSlice, 0, len(sd.bySvc[id]))
			for k := range sd.bySvc[id] {
				esl = append(esl, sd.slices[k])
			}
			entry, ok = service(svc, esl, sd.env)
		}
		i, found := slices.BinarySearch(sd.ids, id)
		switch {
		case ok:
			sd.entries[id] = entry
			if !found {
				sd.ids = slices.Insert(sd.ids, i, id)
			}
		case found:
			delete(sd.entries, id)
			sd.ids = slices.Delete(sd.ids, i, i+1)
		}
	}
	clear(sd.dirty)
	if len(sd.ids) == 0 {
		return nil
	}
	out := make([]snapshot.Service, len(sd.ids))
	for i, id := range sd.ids {
		out[i] = sd.entries[id]
	}
	return out
}
