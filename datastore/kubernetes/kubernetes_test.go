//go:build linux

package kubernetes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

const waitTimeout = 30 * time.Second

// cluster is a running API server with clients, a source and the store it feeds.
type cluster struct {
	t      *testing.T
	server *apiServer
	cs     k8s.Interface
	dyn    dynamic.Interface
	src    *Source
	st     *store.Store

	mu       sync.Mutex
	reported []datastore.Problems
}

var (
	gvrCRD = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	gvrGNP = schema.GroupVersionResource{Group: "projectcalico.org", Version: "v3", Resource: "globalnetworkpolicies"}
)

// applyCRDs creates every CRD of manifests/calico-crds.yaml and waits until all are served.
func (c *cluster) applyCRDs(cfg *rest.Config) {
	c.t.Helper()
	data, err := os.ReadFile("../../manifests/calico-crds.yaml")
	if err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			c.t.Fatalf("manifests/calico-crds.yaml: %v", err)
		}
		var obj map[string]any
		if err := json.Unmarshal(j, &obj); err != nil || obj == nil {
			continue // the leading comment
		}
		if _, err := c.dyn.Resource(gvrCRD).Create(ctxTimeout(c.t), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
			c.t.Fatalf("create CRD: %v", err)
		}
		n++
	}
	if n != 12 {
		c.t.Fatalf("manifests/calico-crds.yaml: %d CRDs, want 12", n)
	}
	cs := k8s.NewForConfigOrDie(cfg)
	eventually(c.t, "CRDs served", func() string {
		if err := checkServed(context.Background(), cs); err != nil {
			return err.Error()
		}
		return ""
	})
}

// calicoObject creates or updates a Calico resource given as YAML.
func (c *cluster) apply(gvr schema.GroupVersionResource, doc string) {
	c.t.Helper()
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		c.t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		c.t.Fatal(err)
	}
	ri := c.dyn.Resource(gvr)
	cur, err := ri.Get(ctxTimeout(c.t), u.GetName(), metav1.GetOptions{})
	if err == nil {
		u.SetResourceVersion(cur.GetResourceVersion())
		_, err = ri.Update(ctxTimeout(c.t), u, metav1.UpdateOptions{})
	} else {
		_, err = ri.Create(ctxTimeout(c.t), u, metav1.CreateOptions{})
	}
	if err != nil {
		c.t.Fatalf("apply %s %s: %v", gvr.Resource, u.GetName(), err)
	}
}

// watch runs the source's Watch until the test ends.
func (c *cluster) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.src.Watch(ctx, c.st, func(p datastore.Problems) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.reported = append(c.reported, p)
		})
	}()
	c.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			c.t.Errorf("Watch: %v", err)
		}
	})
}

// lastReport returns the latest problem list Watch reported and how many it reported.
func (c *cluster) lastReport() (datastore.Problems, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reported) == 0 {
		return nil, 0
	}
	return c.reported[len(c.reported)-1], len(c.reported)
}

// eventually polls cond until it returns "" or the timeout passes.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %s: %s", what, waitTimeout, msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// keysOf lists the keys of the given kinds in the store, sorted.
func keysOf(v *store.View, kinds ...model.Kind) []string {
	var out []string
	for _, k := range kinds {
		for o := range v.All(k) {
			out = append(out, o.GetMeta().Key.String())
		}
	}
	slices.Sort(out)
	return out
}

// wantKeys waits until the store holds exactly want among the given kinds.
func (c *cluster) wantKeys(t *testing.T, what string, kinds []model.Kind, want ...string) {
	t.Helper()
	slices.Sort(want)
	eventually(t, what, func() string {
		if d := cmp.Diff(want, keysOf(c.st.View(), kinds...)); d != "" {
			return "(-want +got):\n" + d
		}
		return ""
	})
}

// forceDelete deletes a pod at once: without a kubelet to confirm, a graceful deletion
// would only set its deletionTimestamp.
var forceDelete = metav1.DeleteOptions{GracePeriodSeconds: new(int64)}

var (
	wepName     = "node--1-k8s-web-eth0"
	wepKey      = model.Key{Kind: model.KindWorkloadEndpoint, Namespace: "prod", Name: wepName}
	policyKinds = []model.Kind{model.KindGlobalNetworkPolicy, model.KindNetworkPolicy, model.KindTier}
)

func pod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "prod", Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:           node,
			ServiceAccountName: "api",
			Containers: []corev1.Container{{Name: "web", Image: "registry.invalid/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}}}},
		},
	}
}

// setPodStatus sets a pod's phase and IPs through the status subresource, as a kubelet does.
func (c *cluster) setPodStatus(name string, phase corev1.PodPhase, ips ...string) {
	c.t.Helper()
	p, err := c.cs.CoreV1().Pods("prod").Get(ctxTimeout(c.t), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	p.Status.Phase = phase
	p.Status.PodIP, p.Status.PodIPs = "", nil
	for i, ip := range ips {
		if i == 0 {
			p.Status.PodIP = ip
		}
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if _, err := c.cs.CoreV1().Pods("prod").UpdateStatus(ctxTimeout(c.t), p, metav1.UpdateOptions{}); err != nil {
		c.t.Fatalf("update pod status: %v", err)
	}
}

func gnpYAML(order int, selector string) string {
	return fmt.Sprintf(`
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: allow-dns}
spec:
  order: %d
  selector: %q
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
`, order, selector)
}

func TestKubernetesDatastore(t *testing.T) {
	server, cfg := startAPIServer(t)
	c := &cluster{t: t, server: server, cs: k8s.NewForConfigOrDie(cfg), dyn: dynamic.NewForConfigOrDie(cfg), st: store.New()}

	// The source is opened as felis opens it, from a kubeconfig file.
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, cfg.Host, adminToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	opened, err := datastore.Open("kubernetes:" + kubeconfig)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c.src = opened.(*Source)
	c.src.CheckInterval = 200 * time.Millisecond

	t.Run("Load without the CRDs", func(t *testing.T) {
		_, err := c.src.Load(context.Background(), store.New())
		if err == nil || !strings.Contains(err.Error(), "manifests/calico-crds.yaml") {
			t.Fatalf("Load: got error %v, want one naming manifests/calico-crds.yaml", err)
		}
	})
	c.applyCRDs(cfg)

	// Initial state: a namespace, a service account, a running pod, a Kubernetes policy, a
	// node and Calico resources, one of them invalid.
	ctx := ctxTimeout(t)
	if _, err := c.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"env": "prod"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().ServiceAccounts("prod").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "api", Labels: map[string]string{"team": "a"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Annotations: map[string]string{
		"projectcalico.org/IPv4Address": "192.168.7.11/24"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.cs.CoreV1().Pods("prod").Create(ctx, pod("web", "node-1", map[string]string{"app": "web"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.setPodStatus("web", corev1.PodRunning, "10.65.0.5")
	tcp := corev1.ProtocolTCP
	if _, err := c.cs.NetworkingV1().NetworkPolicies("prod").Create(ctx, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp}}}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.apply(gvrGNP, gnpYAML(10, "all()"))
	c.apply(gvrGNP, `{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: broken}, spec: {selector: "app == "}}`)
	c.apply(schema.GroupVersionResource{Group: "projectcalico.org", Version: "v3", Resource: "ippools"},
		`{apiVersion: projectcalico.org/v3, kind: IPPool, metadata: {name: pool-a}, spec: {cidr: 10.65.0.0/16, vxlanMode: Always, blockSize: 26}}`)
	c.apply(schema.GroupVersionResource{Group: "crd.projectcalico.org", Version: "v1", Resource: "ipamblocks"},
		`{apiVersion: crd.projectcalico.org/v1, kind: IPAMBlock, metadata: {name: 10-65-0-0-26}, spec: {cidr: 10.65.0.0/26, affinity: "host:node-1"}}`)

	t.Run("Load", func(t *testing.T) {
		problems, err := c.src.Load(context.Background(), c.st)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if len(problems) != 1 || problems[0].Resource != "GlobalNetworkPolicy broken" || problems[0].Field != "spec.selector" ||
			problems[0].Where != "kubernetes:/apis/projectcalico.org/v3/globalnetworkpolicies/broken" {
			t.Fatalf("problems: want one for spec.selector of GlobalNetworkPolicy broken, got %q", problems)
		}
		if !c.st.InSync() {
			t.Fatal("not in sync after Load")
		}
		v := c.st.View()
		want := []string{
			"GlobalNetworkPolicy allow-dns", "IPAMBlock 10-65-0-0-26", "IPPool pool-a", "Node node-1",
			"NetworkPolicy prod/knp.default.web-ingress", "WorkloadEndpoint prod/" + wepName,
			"Profile kns.default", "Profile kns.kube-node-lease", "Profile kns.kube-public", "Profile kns.kube-system",
			"Profile kns.prod", "Profile ksa.prod.api",
		}
		slices.Sort(want)
		got := keysOf(v, model.KindGlobalNetworkPolicy, model.KindIPAMBlock, model.KindIPPool, model.KindNode,
			model.KindNetworkPolicy, model.KindWorkloadEndpoint, model.KindProfile)
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("store after Load (-want +got):\n%s", d)
		}
		w, _ := store.Get[*model.WorkloadEndpoint](v, wepKey)
		if d := cmp.Diff([]netip.Prefix{netip.MustParsePrefix("10.65.0.5/32")}, w.IPNetworks, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); d != "" {
			t.Errorf("endpoint addresses (-want +got):\n%s", d)
		}
		if w.Source.Name != SourceName || w.Source.File != "kubernetes:/api/v1/namespaces/prod/pods/web" {
			t.Errorf("endpoint source: got %+v", w.Source)
		}
	})
	poolKey := model.Key{Kind: model.KindIPPool, Name: "pool-a"}
	poolRev := func() uint64 {
		o, ok := c.st.View().Get(poolKey)
		if !ok {
			t.Fatalf("%s not in the store", poolKey)
		}
		return o.GetMeta().Revision
	}
	loadedPoolRev := poolRev()

	c.watch()
	snapshot := func() (endpoints, policies []string) {
		snap, err := derive.Derive(c.st.View(), "node-1", derive.Options{})
		if err != nil {
			t.Fatalf("derive: %v", err)
		}
		for _, e := range snap.Endpoints {
			endpoints = append(endpoints, fmt.Sprintf("%s %v app=%s env=%s", e.ID, e.Addrs, e.Labels["app"], e.Labels["pcns.env"]))
		}
		for _, p := range snap.Policies {
			policies = append(policies, p.ID)
		}
		return endpoints, policies
	}

	t.Run("snapshot follows pods and namespaces", func(t *testing.T) {
		ctx := ctxTimeout(t)
		p, err := c.cs.CoreV1().Pods("prod").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Labels["app"] = "web2"
		if _, err := c.cs.CoreV1().Pods("prod").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		ns, err := c.cs.CoreV1().Namespaces().Get(ctx, "prod", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ns.Labels["env"] = "production"
		if _, err := c.cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "snapshot endpoint labels", func() string {
			eps, _ := snapshot()
			if d := cmp.Diff([]string{"prod/" + wepName + " [10.65.0.5/32] app=web2 env=production"}, eps); d != "" {
				return "(-want +got):\n" + d
			}
			return ""
		})

		// Watch listed everything again; what did not change kept its revision.
		if got := poolRev(); got != loadedPoolRev {
			t.Errorf("Watch's initial list rewrote the unchanged IP pool: revision %d, want %d", got, loadedPoolRev)
		}

		// A second pod: without an IP it has no endpoint; with one, it has.
		if _, err := c.cs.CoreV1().Pods("prod").Create(ctx, pod("db", "node-1", map[string]string{"app": "db"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.setPodStatus("db", corev1.PodPending)
		time.Sleep(300 * time.Millisecond)
		if _, ok := c.st.View().Get(model.Key{Kind: model.KindWorkloadEndpoint, Namespace: "prod", Name: "node--1-k8s-db-eth0"}); ok {
			t.Fatal("a pod without an IP has an endpoint")
		}
		c.setPodStatus("db", corev1.PodRunning, "10.65.0.6", "fd00::6")
		eventually(t, "second pod's endpoint", func() string {
			eps, _ := snapshot()
			want := []string{
				"prod/node--1-k8s-db-eth0 [10.65.0.6/32 fd00::6/128] app=db env=production",
				"prod/" + wepName + " [10.65.0.5/32] app=web2 env=production",
			}
			if d := cmp.Diff(want, eps); d != "" {
				return "(-want +got):\n" + d
			}
			return ""
		})
		// A pod that finishes stops qualifying: its endpoint goes.
		c.setPodStatus("db", corev1.PodSucceeded, "10.65.0.6")
		c.wantKeys(t, "finished pod's endpoint removed", []model.Kind{model.KindWorkloadEndpoint}, "WorkloadEndpoint prod/"+wepName)
		if err := c.cs.CoreV1().Pods("prod").Delete(ctx, "db", forceDelete); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("policies", func(t *testing.T) {
		ctx := ctxTimeout(t)
		// The Kubernetes policy selected app=web; the pod is app=web2 now, so only the
		// Calico policy (all()) is active on the node.
		eventually(t, "active policies", func() string {
			_, pols := snapshot()
			if d := cmp.Diff([]string{"allow-dns"}, pols); d != "" {
				return "(-want +got):\n" + d
			}
			return ""
		})
		np, err := c.cs.NetworkingV1().NetworkPolicies("prod").Get(ctx, "web-ingress", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		np.Spec.PodSelector.MatchLabels["app"] = "web2"
		if _, err := c.cs.NetworkingV1().NetworkPolicies("prod").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Kubernetes policy active after update", func() string {
			_, pols := snapshot()
			if d := cmp.Diff([]string{"allow-dns", "prod/knp.default.web-ingress"}, pols); d != "" {
				return "(-want +got):\n" + d
			}
			return ""
		})

		// Calico policy: update, then an invalid version (kept: last known good), then fixed.
		c.apply(gvrGNP, gnpYAML(20, "all()"))
		eventually(t, "GNP order updated", func() string {
			if o := gnpOrder(c.st.View()); o != 20 {
				return fmt.Sprintf("order %v", o)
			}
			return ""
		})
		c.apply(gvrGNP, gnpYAML(30, "app ==== 'x'"))
		eventually(t, "invalid GNP reported", func() string {
			p, _ := c.lastReport()
			for _, x := range p {
				if x.Resource == "GlobalNetworkPolicy allow-dns" && x.Field == "spec.selector" && strings.Contains(x.Reason, "keeping its last valid version") {
					return ""
				}
			}
			return fmt.Sprintf("last report %q", p)
		})
		if o := gnpOrder(c.st.View()); o != 20 {
			t.Fatalf("invalid GNP replaced the last valid one: order %v", o)
		}
		c.apply(gvrGNP, gnpYAML(40, "all()"))
		if err := c.dyn.Resource(gvrGNP).Delete(ctx, "broken", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "problems cleared", func() string {
			if p, n := c.lastReport(); n == 0 || len(p) != 0 {
				return fmt.Sprintf("last report %q", p)
			}
			return ""
		})
		if o := gnpOrder(c.st.View()); o != 40 {
			t.Errorf("GNP order %v, want 40", o)
		}

		// Deletes.
		if err := c.cs.NetworkingV1().NetworkPolicies("prod").Delete(ctx, "web-ingress", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := c.dyn.Resource(gvrGNP).Delete(ctx, "allow-dns", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		c.wantKeys(t, "policies deleted", policyKinds)
	})

	t.Run("many pods", func(t *testing.T) {
		// Not a benchmark (timings are logged, never asserted): how the store keeps up
		// with a burst of pod creations, and how fast a fresh Load reads them.
		const n, workers = 500, 8
		start := time.Now()
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				for i := w; i < n; i += workers {
					p := pod(fmt.Sprintf("burst-%d", i), "node-2", map[string]string{"app": "burst"})
					p.Annotations = map[string]string{"cni.projectcalico.org/podIP": fmt.Sprintf("10.66.%d.%d/32", i/250, i%250+1)}
					if _, err := c.cs.CoreV1().Pods("prod").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatalf("create pod: %v", err)
			}
		}
		written := time.Now()
		eventually(t, "burst endpoints", func() string {
			if got := len(slices.Collect(c.st.View().OnNode(model.KindWorkloadEndpoint, "node-2"))); got != n {
				return fmt.Sprintf("%d of %d endpoints", got, n)
			}
			return ""
		})
		t.Logf("%d pods created in %s; the store had all their endpoints %s after the last create",
			n, written.Sub(start).Round(time.Millisecond), time.Since(written).Round(time.Millisecond))

		loadStart := time.Now()
		fresh := store.New()
		if _, err := NewForConfig(cfg).Load(context.Background(), fresh); err != nil {
			t.Fatalf("Load: %v", err)
		}
		total := 0
		for _, k := range model.Kinds {
			total += fresh.View().Count(k)
		}
		d := time.Since(loadStart)
		t.Logf("Load of %d objects: %s (%.0f objects/s, including discovery and informer start)", total, d.Round(time.Millisecond), float64(total)/d.Seconds())
		if got := len(slices.Collect(fresh.View().OnNode(model.KindWorkloadEndpoint, "node-2"))); got != n {
			t.Errorf("fresh Load: %d endpoints on node-2, want %d", got, n)
		}
		if err := c.cs.CoreV1().Pods("prod").DeleteCollection(ctxTimeout(t), forceDelete, metav1.ListOptions{LabelSelector: "app=burst"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "burst endpoints deleted", func() string {
			if got := len(slices.Collect(c.st.View().OnNode(model.KindWorkloadEndpoint, "node-2"))); got != 0 {
				return fmt.Sprintf("%d endpoints left", got)
			}
			return ""
		})
	})

	t.Run("API server restart", func(t *testing.T) {
		start := time.Now()
		c.server.kill()
		eventually(t, "out of sync while the API server is down", func() string {
			if c.st.InSync() {
				return "still in sync"
			}
			return ""
		})
		if _, ok := c.st.View().Get(wepKey); !ok {
			t.Fatal("the endpoint vanished during the outage")
		}
		// A second source whose Watch starts during the outage keeps retrying and says why.
		st2 := store.New()
		src2 := NewForConfig(cfg)
		src2.CheckInterval = 200 * time.Millisecond
		ctx2, cancel2 := context.WithCancel(context.Background())
		reports2 := make(chan datastore.Problems, 100)
		done2 := make(chan error, 1)
		go func() {
			done2 <- src2.Watch(ctx2, st2, func(p datastore.Problems) {
				select {
				case reports2 <- p:
				default:
				}
			})
		}()
		defer func() {
			cancel2()
			if err := <-done2; err != nil {
				t.Errorf("second Watch: %v", err)
			}
		}()
		select {
		case p := <-reports2:
			if len(p) != 1 || p[0].Where != SourceName || !strings.Contains(p[0].Reason, "(retrying)") {
				t.Errorf("second Watch during the outage reported %q, want one retrying problem", p)
			}
		case <-time.After(waitTimeout):
			t.Fatal("second Watch did not report the unreachable API server")
		}

		c.server.start()
		t.Logf("API server down for %s", time.Since(start).Round(time.Millisecond))
		if err := c.cs.CoreV1().Pods("prod").Delete(ctxTimeout(t), "web", forceDelete); err != nil {
			t.Fatal(err)
		}
		c.wantKeys(t, "pod deleted after the restart", []model.Kind{model.KindWorkloadEndpoint})
		eventually(t, "in sync after the restart", func() string {
			if !c.st.InSync() {
				return "out of sync"
			}
			return ""
		})
		t.Logf("in sync %s after the restart began", time.Since(start).Round(time.Millisecond))
		eventually(t, "second source in sync with the same objects", func() string {
			if !st2.InSync() {
				return "out of sync"
			}
			if d := cmp.Diff(keysOf(c.st.View(), model.Kinds...), keysOf(st2.View(), model.Kinds...)); d != "" {
				return "(-first +second):\n" + d
			}
			return ""
		})
	})
}

// gnpOrder returns the order of GlobalNetworkPolicy allow-dns (-1 when absent).
func gnpOrder(v *store.View) float64 {
	p, ok := store.Get[*model.Policy](v, model.Key{Kind: model.KindGlobalNetworkPolicy, Name: "allow-dns"})
	if !ok || p.Order == nil {
		return -1
	}
	return *p.Order
}
