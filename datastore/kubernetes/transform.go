package kubernetes

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// slim is the informers' transform: it drops what felis never reads before an object is
// cached, so the caches of a large cluster stay small. Pods keep only what convert.Pod reads.
func slim(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return slimPod(p), nil
	}
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// slimPod returns the parts of a pod its conversion to a workload endpoint depends on:
// metadata, node, host networking, service account, container ports, phase and IPs.
func slimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: p.ObjectMeta}
	out.ManagedFields = nil
	out.Spec = corev1.PodSpec{
		NodeName:           p.Spec.NodeName,
		HostNetwork:        p.Spec.HostNetwork,
		ServiceAccountName: p.Spec.ServiceAccountName,
		Containers:         slimContainers(p.Spec.Containers),
		InitContainers:     slimContainers(p.Spec.InitContainers),
	}
	out.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs}
	return out
}

// slimContainers keeps each container's name and ports.
func slimContainers(cs []corev1.Container) []corev1.Container {
	if cs == nil {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i, c := range cs {
		out[i] = corev1.Container{Name: c.Name, Ports: c.Ports}
	}
	return out
}
