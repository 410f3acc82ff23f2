package kubernetes

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	networkinginformers "k8s.io/client-go/informers/networking/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/felis-dev/felis/model/convert"
)

// resource is one API resource felis follows with an informer.
type resource struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
	// typed builds the informer of a built-in type and converts its objects; nil for the
	// Calico resources, which go through the dynamic client and convert.Decode.
	typed   func(k8s.Interface) cache.SharedIndexInformer
	convert func(obj any) convert.Result
}

// apiVersion is the resource's group/version as objects spell it.
func (r resource) apiVersion() string { return r.gvr.GroupVersion().String() }

// groupPath is the API path of the resource's group version.
func (r resource) groupPath() string {
	if r.gvr.Group == "" {
		return "/api/" + r.gvr.Version
	}
	return "/apis/" + r.gvr.Group + "/" + r.gvr.Version
}

// listPath is the API path that lists and watches the resource in every namespace.
func (r resource) listPath() string { return r.groupPath() + "/" + r.gvr.Resource }

// path is the API path of one object, used as its resource URL.
func (r resource) path(namespace, name string) string {
	p := r.groupPath()
	if r.namespaced {
		p += "/namespaces/" + namespace
	}
	return p + "/" + r.gvr.Resource + "/" + name
}

// informer builds the resource's informer.
func (r resource) informer(cs k8s.Interface, dyn dynamic.Interface) cache.SharedIndexInformer {
	if r.typed != nil {
		return r.typed(cs)
	}
	return dynamicinformer.NewFilteredDynamicInformer(dyn, r.gvr, "", 0, cache.Indexers{}, nil).Informer()
}

// decode converts an object of this resource.
func (r resource) decode(obj any) convert.Result {
	if r.convert != nil {
		return r.convert(obj)
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return convert.Result{Resource: r.kind, Errors: []convert.FieldError{{Reason: fmt.Sprintf("unexpected object type %T", obj)}}}
	}
	data, err := json.Marshal(u.Object)
	if err != nil {
		return convert.Result{Resource: r.kind + " " + u.GetName(), Errors: []convert.FieldError{{Reason: err.Error()}}}
	}
	return convert.Decode(r.apiVersion(), r.kind, data)
}

// typedConvert adapts a typed converter to any, rejecting other types.
func typedConvert[T any](kind string, f func(*T) convert.Result) func(any) convert.Result {
	return func(obj any) convert.Result {
		o, ok := obj.(*T)
		if !ok {
			return convert.Result{Resource: kind, Errors: []convert.FieldError{{Reason: fmt.Sprintf("unexpected object type %T", obj)}}}
		}
		return f(o)
	}
}

// calico returns the resource of a Calico kind served as a CRD.
func calico(group, version, kind, plural string, namespaced bool) resource {
	return resource{gvr: schema.GroupVersionResource{Group: group, Version: version, Resource: plural}, kind: kind, namespaced: namespaced}
}

// core returns the resource of a built-in kind.
func core(group, version, kind, plural string, namespaced bool, typed func(k8s.Interface) cache.SharedIndexInformer, conv func(any) convert.Result) resource {
	return resource{gvr: schema.GroupVersionResource{Group: group, Version: version, Resource: plural}, kind: kind, namespaced: namespaced, typed: typed, convert: conv}
}

// resources lists every resource felis follows, as DESIGN.md's Kubernetes datastore contract
// names them.
var resources = []resource{
	core("", "v1", "Namespace", "namespaces", false,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return coreinformers.NewNamespaceInformer(c, 0, cache.Indexers{})
		},
		typedConvert("Namespace", convert.Namespace)),
	core("", "v1", "Pod", "pods", true,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return coreinformers.NewPodInformer(c, "", 0, cache.Indexers{})
		},
		typedConvert("Pod", convert.Pod)),
	core("", "v1", "ServiceAccount", "serviceaccounts", true,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return coreinformers.NewServiceAccountInformer(c, "", 0, cache.Indexers{})
		},
		typedConvert("ServiceAccount", convert.ServiceAccount)),
	core("", "v1", "Node", "nodes", false,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return coreinformers.NewNodeInformer(c, 0, cache.Indexers{})
		},
		typedConvert("Node", convert.Node)),
	core("", "v1", "Service", "services", true,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return coreinformers.NewServiceInformer(c, "", 0, cache.Indexers{})
		},
		typedConvert("Service", convert.Service)),
	core("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return networkinginformers.NewNetworkPolicyInformer(c, "", 0, cache.Indexers{})
		},
		typedConvert("NetworkPolicy", convert.K8sNetworkPolicy)),
	core("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true,
		func(c k8s.Interface) cache.SharedIndexInformer {
			return discoveryinformers.NewEndpointSliceInformer(c, "", 0, cache.Indexers{})
		},
		typedConvert("EndpointSlice", convert.EndpointSlice)),
	calico("projectcalico.org", "v3", "GlobalNetworkPolicy", "globalnetworkpolicies", false),
	calico("projectcalico.org", "v3", "NetworkPolicy", "networkpolicies", true),
	calico("projectcalico.org", "v3", "Tier", "tiers", false),
	calico("projectcalico.org", "v3", "Profile", "profiles", false),
	calico("projectcalico.org", "v3", "HostEndpoint", "hostendpoints", false),
	calico("projectcalico.org", "v3", "NetworkSet", "networksets", true),
	calico("projectcalico.org", "v3", "GlobalNetworkSet", "globalnetworksets", false),
	calico("projectcalico.org", "v3", "IPPool", "ippools", false),
	calico("projectcalico.org", "v3", "FelixConfiguration", "felixconfigurations", false),
	calico("projectcalico.org", "v3", "BGPConfiguration", "bgpconfigurations", false),
	calico("projectcalico.org", "v3", "BlockAffinity", "blockaffinities", false),
	calico("crd.projectcalico.org", "v1", "IPAMBlock", "ipamblocks", false),
}

// Compile-time checks that the typed converters take the types the informers deliver.
var (
	_ = typedConvert[corev1.Pod]
	_ = typedConvert[networkingv1.NetworkPolicy]
	_ = typedConvert[discoveryv1.EndpointSlice]
)
