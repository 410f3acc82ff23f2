package main

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/felis-dev/felis/snapshot"
)

// Endpoint programming states.
const (
	stateProgrammed = "programmed" // every dataplane holds its current desired state
	stateError      = "error"      // its current desired state failed to program; Reason says why
)

// EndpointStatus is one local endpoint's programming status, as /status serves it.
type EndpointStatus struct {
	ID        string    `json:"id"`                 // NAMESPACE/NAME of a workload endpoint, or the host endpoint's name
	Kind      string    `json:"kind"`               // WorkloadEndpoint or HostEndpoint
	Workload  string    `json:"workload,omitempty"` // NAMESPACE/POD of a workload endpoint
	Interface string    `json:"interface"`
	State     string    `json:"state"` // programmed or error
	Reason    string    `json:"reason,omitempty"`
	Revision  uint64    `json:"revision"` // store revision of the state (programmed or attempted)
	Time      time.Time `json:"time"`     // when the endpoint reached State
	hash      string    // what was programmed: endpoint, its policies and profiles
}

// StatusReport is the agent's /status document.
type StatusReport struct {
	Node      string           `json:"node"`
	InSync    bool             `json:"inSync"`
	Revision  uint64           `json:"revision"` // last revision every dataplane programmed
	LastError string           `json:"lastError,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// statusBook records per-endpoint programming status cycle by cycle. Safe for concurrent use.
type statusBook struct {
	mu     sync.Mutex
	report StatusReport
	byID   map[string]*EndpointStatus
}

func newStatusBook(node string) *statusBook {
	return &statusBook{report: StatusReport{Node: node, Endpoints: []EndpointStatus{}}, byID: map[string]*EndpointStatus{}}
}

// setInSync records whether the store was in sync at the last cycle.
func (b *statusBook) setInSync(in bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.report.InSync = in
}

// record folds in one cycle over snap at revision rev: with failure empty every endpoint is
// programmed; otherwise an endpoint whose desired state changed since it was last programmed
// (or that is new) is in error with failure as the reason, and the others stay programmed,
// since a failed sync leaves the previous kernel state in place.
func (b *statusBook) record(snap *snapshot.Snapshot, rev uint64, now time.Time, failure string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	policyHash := make(map[string]string, len(snap.Policies)+len(snap.Profiles))
	for _, p := range snap.Policies {
		policyHash[p.ID] = p.Hash
	}
	for _, p := range snap.Profiles {
		policyHash["profile:"+p.ID] = p.Hash
	}
	next := make(map[string]*EndpointStatus, len(snap.Endpoints)+len(snap.HostEndpoints))
	add := func(id, kind, workload, iface, own string, dirs ...snapshot.Direction) {
		h := endpointHash(own, policyHash, dirs)
		cur := b.byID[kind+"/"+id]
		st := &EndpointStatus{ID: id, Kind: kind, Workload: workload, Interface: iface}
		switch {
		case cur != nil && cur.hash == h && cur.State == stateProgrammed:
			*st = *cur // unchanged and in place, whatever this cycle did
		case failure == "":
			st.State, st.Revision, st.Time, st.hash = stateProgrammed, rev, now, h
		default:
			st.State, st.Reason, st.Revision, st.Time = stateError, failure, rev, now
			if cur != nil {
				st.hash = cur.hash
				if cur.State == stateError && cur.Reason == failure {
					st.Time, st.Revision = cur.Time, cur.Revision
				}
			}
		}
		next[kind+"/"+id] = st
	}
	for _, e := range snap.Endpoints {
		add(e.ID, "WorkloadEndpoint", e.Namespace+"/"+e.Workload, e.Interface, e.Hash, e.Ingress, e.Egress)
	}
	for _, e := range snap.HostEndpoints {
		add(e.ID, "HostEndpoint", "", e.Interface, e.Hash,
			e.Normal.Ingress, e.Normal.Egress, e.PreDNAT.Ingress, e.PreDNAT.Egress,
			e.Untracked.Ingress, e.Untracked.Egress, e.Forward.Ingress, e.Forward.Egress)
	}
	b.byID = next
	b.report.LastError = failure
	if failure == "" {
		b.report.Revision = rev
	}
	b.report.Endpoints = b.report.Endpoints[:0]
	for _, k := range slices.Sorted(maps.Keys(next)) {
		b.report.Endpoints = append(b.report.Endpoints, *next[k])
	}
}

// fail records a cycle that reached no dataplane (derive failed): the endpoints keep their
// status, since the kernel kept its state; only the last error changes.
func (b *statusBook) fail(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.report.LastError = reason
}

// snapshot returns a copy of the report.
func (b *statusBook) snapshot() StatusReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.report
	r.Endpoints = slices.Clone(b.report.Endpoints)
	return r
}

// endpointHash covers what programming an endpoint involves: its own content and the content
// of every policy and profile its directions list.
func endpointHash(own string, policyHash map[string]string, dirs []snapshot.Direction) string {
	var b strings.Builder
	b.WriteString(own)
	for _, d := range dirs {
		for _, t := range d.Tiers {
			for _, id := range t.Policies {
				b.WriteString("|" + id + "=" + policyHash[id])
			}
		}
		for _, id := range d.Profiles {
			b.WriteString("|profile:" + id + "=" + policyHash["profile:"+id])
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}
