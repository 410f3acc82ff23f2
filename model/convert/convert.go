package convert

import (
	"fmt"
	"strings"

	"github.com/felis-dev/felis/model"
)

// FieldError is one validation failure: Field is the path (spec.ingress[0].source.selector),
// Reason says what is wrong and what is expected.
type FieldError struct{ Field, Reason string }

// Error renders "field: reason" (or just the reason when the field is unknown).
func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Result of decoding one API object.
type Result struct {
	Resource string         // "Kind namespace/name" or "Kind name" as the user wrote it (API kind)
	Objects  []model.Object // zero or more model objects (a Pod gives one WorkloadEndpoint; a skipped pod gives none)
	Errors   []FieldError   // non-empty => the resource is invalid and Objects is empty
	Skipped  bool           // a kind felis does not use (notice, not an error)
}

// API groups felis understands, as they appear in apiVersion before the "/".
const (
	groupCalico     = "projectcalico.org"
	groupCalicoCRD  = "crd.projectcalico.org"
	groupCore       = ""
	groupNetworking = "networking.k8s.io"
	groupDiscovery  = "discovery.k8s.io"
)

// Decode converts one resource given as JSON (a single object, not a List).
func Decode(apiVersion, kind string, data []byte) Result {
	group, version, ok := strings.Cut(apiVersion, "/")
	if !ok {
		group, version = "", apiVersion
	}
	switch {
	case group == groupCalico && version == "v3":
		if dec, ok := calicoDecoders[kind]; ok {
			return dec(data)
		}
	case group == groupCalicoCRD && version == "v1" && kind == "IPAMBlock":
		return decodeIPAMBlock(data)
	case group == groupCore && version == "v1":
		if dec, ok := coreDecoders[kind]; ok {
			return dec(data)
		}
	case group == groupNetworking && version == "v1" && kind == "NetworkPolicy":
		return decodeAs("NetworkPolicy", K8sNetworkPolicy)(data)
	case group == groupDiscovery && version == "v1" && kind == "EndpointSlice":
		return decodeAs("EndpointSlice", EndpointSlice)(data)
	}
	return Result{Resource: resourceName(kind, data), Skipped: true}
}

// calicoDecoders maps each projectcalico.org/v3 kind felis uses to its decoder.
var calicoDecoders = map[string]func([]byte) Result{
	"GlobalNetworkPolicy": decodeGlobalNetworkPolicy,
	"NetworkPolicy":       decodeNetworkPolicy,
	"Tier":                decodeTier,
	"Profile":             decodeProfile,
	"WorkloadEndpoint":    decodeAs("WorkloadEndpoint", CalicoWorkloadEndpoint),
	"HostEndpoint":        decodeHostEndpoint,
	"NetworkSet":          decodeNetworkSet,
	"GlobalNetworkSet":    decodeGlobalNetworkSet,
	"IPPool":              decodeIPPool,
	"Node":                decodeAs("Node", CalicoNode),
	"FelixConfiguration":  decodeFelixConfiguration,
	"BGPConfiguration":    decodeBGPConfiguration,
	"BlockAffinity":       decodeBlockAffinity,
}

// coreDecoders maps each Kubernetes core/v1 kind felis uses to its decoder.
var coreDecoders = map[string]func([]byte) Result{
	"Namespace":      decodeAs("Namespace", Namespace),
	"Pod":            decodeAs("Pod", Pod),
	"ServiceAccount": decodeAs("ServiceAccount", ServiceAccount),
	"Node":           decodeAs("Node", Node),
	"Service":        decodeAs("Service", Service),
}

// resourceText renders "Kind namespace/name" or "Kind name".
func resourceText(kind, namespace, name string) string {
	if namespace == "" {
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

// errs collects field errors for one resource.
type errs struct{ list []FieldError }

// add records one error at field.
func (e *errs) add(field, format string, args ...any) {
	e.list = append(e.list, FieldError{Field: field, Reason: fmt.Sprintf(format, args...)})
}

// ok reports whether no error has been recorded.
func (e *errs) ok() bool { return len(e.list) == 0 }

// result assembles a Result: objects only when there is no error.
func (e *errs) result(resource string, objs ...model.Object) Result {
	if !e.ok() {
		return Result{Resource: resource, Errors: e.list}
	}
	return Result{Resource: resource, Objects: objs}
}

// idx renders a path element with an index: "spec.ingress[3]".
func idx(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// key builds a model key.
func key(kind model.Kind, namespace, name string) model.Meta {
	return model.Meta{Key: model.Key{Kind: kind, Namespace: namespace, Name: name}}
}

// decodeAs decodes data as T and converts it with conv; a JSON error becomes the Result's
// errors under kind.
func decodeAs[T any](kind string, conv func(*T) Result) func(data []byte) Result {
	return func(data []byte) Result {
		var v T
		if fe := decodeJSON(data, &v, false); fe != nil {
			return Result{Resource: resourceName(kind, data), Errors: fe}
		}
		return conv(&v)
	}
}
