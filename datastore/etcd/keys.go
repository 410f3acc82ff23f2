package etcd

import (
	"encoding/json"
	"strings"

	"github.com/felis-dev/felis/model/convert"
)

// Key prefixes of Calico's etcdv3 layout that felis reads.
const (
	// ResourcePrefix holds the projectcalico.org/v3 resources as their v3 JSON:
	// ResourcePrefix + PLURAL + "/" + [NAMESPACE + "/"] + NAME.
	ResourcePrefix = "/calico/resources/v3/projectcalico.org/"
	// BlockPrefix holds the IPAM blocks: BlockPrefix + "ipv4/block/10.0.0.0-26" with the
	// backend AllocationBlock JSON (cidr, affinity "host:NODE", ...).
	BlockPrefix = "/calico/ipam/v2/assignment/"
)

// resourceKind describes one plural of the resource layout.
type resourceKind struct {
	kind       string
	namespaced bool
}

// resourceKinds maps each plural felis uses to its v3 kind. Kubernetes-originated kinds
// (pods, namespaces, Kubernetes policies and services) do not exist in an etcd datastore.
var resourceKinds = map[string]resourceKind{
	"globalnetworkpolicies": {kind: "GlobalNetworkPolicy"},
	"networkpolicies":       {kind: "NetworkPolicy", namespaced: true},
	"tiers":                 {kind: "Tier"},
	"profiles":              {kind: "Profile"},
	"workloadendpoints":     {kind: "WorkloadEndpoint", namespaced: true},
	"hostendpoints":         {kind: "HostEndpoint"},
	"networksets":           {kind: "NetworkSet", namespaced: true},
	"globalnetworksets":     {kind: "GlobalNetworkSet"},
	"ippools":               {kind: "IPPool"},
	"nodes":                 {kind: "Node"},
	"felixconfigurations":   {kind: "FelixConfiguration"},
	"bgpconfigurations":     {kind: "BGPConfiguration"},
	"blockaffinities":       {kind: "BlockAffinity"},
}

// decodeKV converts one key and value. A key outside the layout or of a kind felis does not
// use gives a Skipped result; a value whose identity does not match its key is invalid.
func decodeKV(key string, value []byte) convert.Result {
	if rest, ok := strings.CutPrefix(key, ResourcePrefix); ok {
		return decodeResource(rest, value)
	}
	if rest, ok := strings.CutPrefix(key, BlockPrefix); ok {
		return decodeBlock(rest, value)
	}
	return convert.Result{Resource: key, Skipped: true}
}

// decodeResource decodes PLURAL/[NAMESPACE/]NAME and its v3 JSON.
func decodeResource(path string, value []byte) convert.Result {
	parts := strings.Split(path, "/")
	rk, ok := resourceKinds[parts[0]]
	if !ok {
		return convert.Result{Resource: parts[0] + " " + strings.Join(parts[1:], "/"), Skipped: true}
	}
	var namespace, name string
	switch {
	case rk.namespaced && len(parts) == 3:
		namespace, name = parts[1], parts[2]
	case !rk.namespaced && len(parts) == 2:
		name = parts[1]
	default:
		return convert.Result{Resource: rk.kind + " " + strings.Join(parts[1:], "/"), Skipped: true}
	}
	res := convert.Decode("projectcalico.org/v3", rk.kind, value)
	if len(res.Errors) > 0 {
		return res
	}
	var doc struct {
		Metadata struct{ Name, Namespace string } `json:"metadata"`
	}
	_ = json.Unmarshal(value, &doc) // Decode has accepted the JSON
	switch {
	case doc.Metadata.Name != name:
		res.Objects = nil
		res.Errors = append(res.Errors, convert.FieldError{Field: "metadata.name", Reason: "is " + quote(doc.Metadata.Name) + " but the key says " + quote(name)})
	case rk.namespaced && doc.Metadata.Namespace != namespace:
		res.Objects = nil
		res.Errors = append(res.Errors, convert.FieldError{Field: "metadata.namespace", Reason: "is " + quote(doc.Metadata.Namespace) + " but the key says " + quote(namespace)})
	}
	return res
}

// decodeBlock decodes ipvN/block/CIDR-WITH-DASH and the backend block JSON by wrapping it as
// the crd.projectcalico.org/v1 IPAMBlock it is in a Kubernetes datastore.
func decodeBlock(path string, value []byte) convert.Result {
	parts := strings.Split(path, "/")
	if len(parts) != 3 || parts[1] != "block" {
		return convert.Result{Resource: "IPAM " + path, Skipped: true}
	}
	if !json.Valid(value) {
		return convert.Result{Resource: "IPAMBlock " + parts[2], Errors: []convert.FieldError{{Reason: "not valid JSON"}}}
	}
	name, _ := json.Marshal(parts[2])
	doc := []byte(`{"metadata":{"name":` + string(name) + `},"spec":` + string(value) + `}`)
	return convert.Decode("crd.projectcalico.org/v1", "IPAMBlock", doc)
}

// quote renders s in double quotes.
func quote(s string) string { b, _ := json.Marshal(s); return string(b) }
