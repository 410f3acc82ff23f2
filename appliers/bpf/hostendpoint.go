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

// Host endpoints: the normal programs live in feps_v1 like a workload's; the untracked,
// preDNAT and forward stage programs of each host endpoint interface in fhep_v1 (see
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
func (d *Dataplane) desiredHosts(st *render.State, o *observed) {
	o.hosts = map[uint32]render.HostPrograms{}
	for name, hp := range st.Hosts {
		if idx, err := d.opts.Ifindex(name); err == nil {
			o.hosts[uint32(idx)] = hp
		}
	}
}

func (d *Dataplane) observeHosts(o *observed) error {
	o.hosts = map[uint32]render.HostPrograms{}
	var idx uint32
	var hp policyHepProgs
	it := d.objs.FhepV1.Iterate()
	for it.Next(&idx, &hp) {
		o.hosts[idx] = render.HostPrograms{Prog: hp.Prog, Len: hp.Len}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("reading map fhep_v1: %w", err)
	}
	return nil
}

func diffHosts(want, have *observed, p *plan) {
	for k, v := range want.hosts {
		if h, ok := have.hosts[k]; !ok || h != v {
			p.hostPut = append(p.hostPut, k)
			p.hostVal = append(p.hostVal, v)
		}
	}
	for k := range have.hosts {
		if _, ok := want.hosts[k]; !ok {
			p.hostDel = append(p.hostDel, k)
		}
	}
}

func (d *Dataplane) putHosts(p plan, res *appliers.Result) error {
	for i, k := range p.hostPut {
		v := p.hostVal[i]
		if err := d.objs.FhepV1.Put(k, policyHepProgs{Prog: v.Prog, Len: v.Len}); err != nil {
			return fmt.Errorf("map fhep_v1 ifindex %d: %w", k, err)
		}
		res.Counts["host-put"]++
	}
	return nil
}

func (d *Dataplane) deleteHosts(p plan, res *appliers.Result) error {
	for _, k := range p.hostDel {
		if err := d.objs.FhepV1.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("map fhep_v1 ifindex %d: %w", k, err)
		}
		res.Counts["host-del"]++
	}
	return nil
}

func (p plan) hostStrings() (put, del []string) {
	for i, k := range p.hostPut {
		put = append(put, fmt.Sprintf("host-put %d %+v", k, p.hostVal[i]))
	}
	for _, k := range p.hostDel {
		del = append(del, fmt.Sprintf("host-del %d", k))
	}
	return put, del
}
