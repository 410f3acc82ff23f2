//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf/render"
)

// Host endpoints: the normal programs live in feps_v2 like a workload's; the untracked,
// preDNAT and forward stage programs of each host endpoint interface in fhep_v2 (see
// bpf-programs/hep.h for the packet path). A `*` host endpoint is put on every interface of
// the network namespace without a named host endpoint or a workload prefix, as listed at
// each Sync.

// listInterfaces is the default Options.Interfaces: the current netns's interface names.
func listInterfaces() ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ifs))
	for i, x := range ifs {
		out[i] = x.Name
	}
	return out, nil
}

// expandWildcard puts the rendered `*` host endpoint on the namespace's interfaces.
func (d *Dataplane) expandWildcard(st *render.State) error {
	if st.Wildcard == nil {
		return nil
	}
	ifaces, err := d.opts.Interfaces()
	if err != nil {
		return fmt.Errorf("listing interfaces for the \"*\" host endpoint: %w", err)
	}
	st.ExpandWildcard(ifaces)
	return nil
}

// desiredHosts resolves the stage programs' interfaces to ifindexes (those that resolved for
// the endpoint entries).
func (d *Dataplane) desiredHosts(st *render.State, o *wanted) {
	o.hosts = map[uint32]render.HostPrograms{}
	for name, hp := range st.Hosts {
		if idx, err := d.opts.Ifindex(name); err == nil {
			o.hosts[uint32(idx)] = hp
		}
	}
}

func (d *Dataplane) observeHosts(o *observed) error {
	var idx uint32
	var hp policyHepProgs
	it := d.objs.FhepV2.Iterate()
	for it.Next(&idx, &hp) {
		o.hosts[idx] = hp
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map fhep_v2: %w", err)
	}
	return nil
}

func (d *Dataplane) putHosts(p plan, res *appliers.Result) error {
	for i, k := range p.hostPut {
		if err := d.objs.FhepV2.Put(k, p.hostVal[i]); err != nil {
			return fmt.Errorf("map fhep_v2 ifindex %d: %w", k, err)
		}
		res.Counts["host-put"]++
	}
	return nil
}

func (d *Dataplane) deleteHosts(p plan, res *appliers.Result) error {
	for _, k := range p.hostDel {
		if err := d.objs.FhepV2.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("map fhep_v2 ifindex %d: %w", k, err)
		}
		res.Counts["host-del"]++
	}
	return nil
}

func (p plan) hostStrings() (put, del []string) {
	for i, k := range p.hostPut {
		v := p.hostVal[i]
		put = append(put, fmt.Sprintf("host-put %d {Prog:%08x Base:%d Len:%d}", k, v.Prog, v.Base, v.Len))
	}
	for _, k := range p.hostDel {
		del = append(del, fmt.Sprintf("host-del %d", k))
	}
	return put, del
}
