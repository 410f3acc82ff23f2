//go:build linux

package fv_test

import (
	"cmp"
	"fmt"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/felis-dev/felis/tools/netns"
)

// These builders write the Kubernetes objects of a spec as `kubectl get -o yaml` would; the
// file datastore converts them as Calico's Kubernetes backend does.

func toYAML(obj any) string {
	b, err := yaml.Marshal(obj)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// nodeYAML is the Kubernetes Node of a harness node, with the address annotations Calico writes.
func nodeYAML(n *netns.Node) string {
	return toYAML(&corev1.Node{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   n.NodeName,
			Labels: map[string]string{"kubernetes.io/hostname": n.NodeName},
			Annotations: map[string]string{
				"projectcalico.org/IPv4Address": fmt.Sprintf("%s/%d", n.IPv4, n.Subnet4.Bits()),
				"projectcalico.org/IPv6Address": fmt.Sprintf("%s/%d", n.IPv6, n.Subnet6.Bits()),
			},
		},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IPv4.String()},
			{Type: corev1.NodeInternalIP, Address: n.IPv6.String()},
		}},
	})
}

// namespaceYAML is a Namespace with labels (plus the kubernetes.io/metadata.name label the API
// server adds).
func namespaceYAML(name string, labels map[string]string) string {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range labels {
		l[k] = v
	}
	return toYAML(&corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l},
		Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
	})
}

// podYAML is a running Pod on node with the harness pod's addresses as its podIPs.
func podYAML(spec podSpec, p *netns.Pod, node string) string {
	var ports []corev1.ContainerPort
	for _, np := range spec.Ports {
		ports = append(ports, corev1.ContainerPort{Name: np.Name, ContainerPort: int32(np.Port), Protocol: corev1.Protocol(np.Protocol)})
	}
	var ips []corev1.PodIP
	for _, a := range p.Addrs() {
		ips = append(ips, corev1.PodIP{IP: a.String()})
	}
	return toYAML(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: cmp.Or(spec.ServiceAccount, "default"),
			Containers:         []corev1.Container{{Name: "main", Image: "busybox", Ports: ports}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ips[0].IP, PodIPs: ips},
	})
}

// serviceAccountYAML is a ServiceAccount (the pods here all run as "default").
func serviceAccountYAML(namespace, name string) string {
	return toYAML(&corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
	})
}
