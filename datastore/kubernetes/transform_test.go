package kubernetes

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/model/convert"
)

// TestSlimPodConvertsTheSame checks that the transform keeps everything convert.Pod reads:
// the endpoint (or its absence, or the errors) is the same from the slim pod.
func TestSlimPodConvertsTheSame(t *testing.T) {
	now := metav1.Now()
	full := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "prod", Labels: map[string]string{"app": "web"},
				Annotations: map[string]string{
					"cni.projectcalico.org/podIPs":                     "10.65.0.5/32",
					"cni.projectcalico.org/floatingIPs":                `["192.0.2.5"]`,
					"cni.projectcalico.org/allowedSourcePrefixes":      `["10.9.0.0/16"]`,
					"kubectl.kubernetes.io/last-applied-configuration": "{}",
				},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
			Spec: corev1.PodSpec{
				NodeName: "node-1", ServiceAccountName: "api",
				Containers: []corev1.Container{{Name: "web", Image: "web:1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}},
				InitContainers: []corev1.Container{{Name: "sidecar", Image: "proxy:1",
					Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}}},
				Volumes: []corev1.Volume{{Name: "data"}},
			},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.65.0.5", PodIPs: []corev1.PodIP{{IP: "10.65.0.5"}, {IP: "fd00::5"}},
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
	}
	tests := map[string]func(p *corev1.Pod){
		"running":            func(*corev1.Pod) {},
		"host network":       func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"unscheduled":        func(p *corev1.Pod) { p.Spec.NodeName = "" },
		"succeeded":          func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
		"no status IPs":      func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil },
		"deleting, IP freed": func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Annotations["cni.projectcalico.org/podIP"] = "" },
		"invalid IP":         func(p *corev1.Pod) { p.Status.PodIPs = []corev1.PodIP{{IP: "10.65.0"}} },
		"no service account": func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			p := full()
			mutate(p)
			want := convert.Pod(p)
			slimmed, err := slim(p.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			sp := slimmed.(*corev1.Pod)
			addrs := cmp.Options{
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
			}
			if d := cmp.Diff(want, convert.Pod(sp), addrs); d != "" {
				t.Errorf("conversion of the slim pod differs (-full +slim):\n%s", d)
			}
			if sp.ManagedFields != nil || sp.Spec.Volumes != nil || sp.Spec.Containers[0].Image != "" || sp.Status.Conditions != nil {
				t.Errorf("slim pod keeps unused fields: %+v", sp)
			}
		})
	}
}
