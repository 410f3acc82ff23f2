// Package kubernetes is the Kubernetes datastore (--datastore kubernetes): client-go informers
// for the core objects felis uses and for the Calico resources served as projectcalico.org/v3
// CRDs (manifests/calico-crds.yaml), each object converted by model/convert into the store.
package kubernetes
