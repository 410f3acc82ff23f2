// Package calicodiff checks model/convert against Calico's own code: random Kubernetes
// NetworkPolicies, Calico v3 policies and pods go through Calico's converter and update processors
// and through convert, and the results must match. Its own module keeps Calico's backend out of
// felis's go.mod; run it with `cd model/convert/calicodiff && go test .`.
package calicodiff
