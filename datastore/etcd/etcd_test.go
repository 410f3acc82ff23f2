package etcd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/datastore/internal/etcdtest"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

const waitTimeout = 20 * time.Second

// gnp is a GlobalNetworkPolicy document with the given order and selector.
func gnp(name string, order int, selector string) string {
	return fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":%q},`+
		`"spec":{"order":%d,"selector":%q,"types":["Ingress"],"ingress":[{"action":"Allow","protocol":"TCP","destination":{"ports":[80]}}]}}`,
		name, order, selector)
}

const (
	keyGNP   = ResourcePrefix + "globalnetworkpolicies/allow-web"
	keyNP    = ResourcePrefix + "networkpolicies/prod/deny-all"
	keyPool  = ResourcePrefix + "ippools/pool-a"
	keyBlock = BlockPrefix + "ipv4/block/10.65.0.0-26"
	keyPeer  = ResourcePrefix + "bgppeers/peer-a" // a kind felis does not use
	keyBad   = ResourcePrefix + "globalnetworkpolicies/broken"

	docNP    = `{"apiVersion":"projectcalico.org/v3","kind":"NetworkPolicy","metadata":{"name":"deny-all","namespace":"prod"},"spec":{"selector":"all()","types":["Ingress"]}}`
	docPool  = `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pool-a"},"spec":{"cidr":"10.65.0.0/16","vxlanMode":"Always","blockSize":26}}`
	docBlock = `{"cidr":"10.65.0.0/26","affinity":"host:node-1","allocations":[null],"unallocated":[],"attributes":[],"deleted":false}`
	docPeer  = `{"apiVersion":"projectcalico.org/v3","kind":"BGPPeer","metadata":{"name":"peer-a"},"spec":{"peerIP":"10.0.0.1","asNumber":64512}}`
)

// harness is one embedded etcd, a client writing to it and a source feeding a store.
type harness struct {
	t    *testing.T
	etcd *etcdtest.Server
	cli  *clientv3.Client
	src  *Source
	st   *store.Store

	mu       sync.Mutex
	reported []datastore.Problems
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, etcd: etcdtest.Start(t), st: store.New()}
	h.connect()
	h.src = New(h.etcd.URL())
	h.src.DialTimeout = 2 * time.Second
	return h
}

// connect (re)creates the writing client for the server's current port.
func (h *harness) connect() {
	h.t.Helper()
	if h.cli != nil {
		h.cli.Close()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{h.etcd.URL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		h.t.Fatalf("etcd client: %v", err)
	}
	h.cli = cli
	h.t.Cleanup(func() { cli.Close() })
}

func (h *harness) put(key, value string) int64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.cli.Put(ctx, key, value)
	if err != nil {
		h.t.Fatalf("put %s: %v", key, err)
	}
	return resp.Header.Revision
}

func (h *harness) del(key string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.cli.Delete(ctx, key); err != nil {
		h.t.Fatalf("delete %s: %v", key, err)
	}
}

// tlsClient is a writing client with the source's endpoints and TLS configuration.
func tlsClient(t *testing.T, src *Source) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: src.endpoints, TLS: src.TLS, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// watch runs the source's Watch until the test ends.
func (h *harness) watch() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- h.src.Watch(ctx, h.st, func(p datastore.Problems) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.reported = append(h.reported, p)
		})
	}()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Watch: %v", err)
		}
	})
}

// lastReport returns the latest problem list Watch reported (nil when none yet).
func (h *harness) lastReport() (datastore.Problems, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reported) == 0 {
		return nil, 0
	}
	return h.reported[len(h.reported)-1], len(h.reported)
}

// keys lists every key in the store.
func keys(v *store.View) []string {
	var out []string
	for _, k := range model.Kinds {
		for o := range v.All(k) {
			out = append(out, o.GetMeta().Key.String())
		}
	}
	slices.Sort(out)
	return out
}

// eventually polls cond until it returns "" or the timeout passes, then fails with its
// last message.
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
		time.Sleep(20 * time.Millisecond)
	}
}

// wantKeys waits until the store holds exactly want.
func (h *harness) wantKeys(what string, want ...string) {
	h.t.Helper()
	slices.Sort(want)
	eventually(h.t, what, func() string {
		if d := cmp.Diff(want, keys(h.st.View())); d != "" {
			return "store keys (-want +got):\n" + d
		}
		return ""
	})
}

func policyOrder(v *store.View, name string) (float64, bool) {
	p, ok := store.Get[*model.Policy](v, model.Key{Kind: model.KindGlobalNetworkPolicy, Name: name})
	if !ok || p.Order == nil {
		return 0, false
	}
	return *p.Order, true
}

func TestLoadAndWatchFollowResources(t *testing.T) {
	h := newHarness(t)
	h.put(keyGNP, gnp("allow-web", 10, "app == 'web'"))
	h.put(keyNP, docNP)
	h.put(keyPool, docPool)
	h.put(keyBlock, docBlock)
	h.put(keyPeer, docPeer)
	h.put(keyBad, gnp("broken", 1, "app == "))

	problems, err := h.src.Load(context.Background(), h.st)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(problems) != 1 || problems[0].Where != "etcd:"+keyBad || problems[0].Resource != "GlobalNetworkPolicy broken" || problems[0].Field != "spec.selector" {
		t.Fatalf("Load problems: want one for spec.selector of %s, got %q", keyBad, problems)
	}
	base := []string{"GlobalNetworkPolicy allow-web", "NetworkPolicy prod/deny-all", "IPPool pool-a", "IPAMBlock 10-65-0-0-26"}
	if d := cmp.Diff(slices.Sorted(slices.Values(base)), keys(h.st.View())); d != "" {
		t.Fatalf("store after Load (-want +got):\n%s", d)
	}
	if !h.st.InSync() {
		t.Fatal("store not in sync after Load")
	}
	v := h.st.View()
	blk, ok := store.Get[*model.IPAMBlock](v, model.Key{Kind: model.KindIPAMBlock, Name: "10-65-0-0-26"})
	if !ok || blk.AffinityNode != "node-1" || blk.CIDR.String() != "10.65.0.0/26" {
		t.Fatalf("IPAM block: got %+v", blk)
	}
	if src := blk.Source; src.Name != SourceName || src.File != "etcd:"+keyBlock {
		t.Errorf("IPAM block source: got %+v", src)
	}
	poolRev := mustGet(t, v, model.Key{Kind: model.KindIPPool, Name: "pool-a"}).GetMeta().Revision

	h.watch()
	// Watch lists again; nothing changed, so nothing is rewritten.
	eventually(t, "watch started", func() string {
		if h.src.lists.Load() == 0 {
			return "no list yet"
		}
		return ""
	})

	// Update.
	h.put(keyGNP, gnp("allow-web", 20, "app == 'web'"))
	eventually(t, "policy order updated", func() string {
		if o, _ := policyOrder(h.st.View(), "allow-web"); o != 20 {
			return fmt.Sprintf("order %v", o)
		}
		return ""
	})

	// An invalid version keeps the last valid one and is reported.
	h.put(keyGNP, gnp("allow-web", 30, "app ==== 'web'"))
	eventually(t, "invalid update reported", func() string {
		p, _ := h.lastReport()
		for _, x := range p {
			if x.Where == "etcd:"+keyGNP && x.Field == "spec.selector" && strings.Contains(x.Reason, "keeping its last valid version") {
				return ""
			}
		}
		return fmt.Sprintf("last report %q", p)
	})
	if o, _ := policyOrder(h.st.View(), "allow-web"); o != 20 {
		t.Fatalf("invalid update replaced the last valid policy: order %v, want 20", o)
	}

	// Fixing both broken policies clears the problems.
	h.put(keyGNP, gnp("allow-web", 40, "app == 'web'"))
	h.put(keyBad, gnp("broken", 1, "app == 'x'"))
	eventually(t, "problems cleared", func() string {
		if p, n := h.lastReport(); n == 0 || len(p) != 0 {
			return fmt.Sprintf("last report %q", p)
		}
		return ""
	})
	h.wantKeys("fixed policy added", append(slices.Clone(base), "GlobalNetworkPolicy broken")...)

	// Deletes, and a value whose name does not match its key.
	h.del(keyNP)
	h.del(keyBlock)
	h.put(ResourcePrefix+"tiers/mismatch", `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"other"},"spec":{"order":100}}`)
	h.wantKeys("deletes applied", "GlobalNetworkPolicy allow-web", "GlobalNetworkPolicy broken", "IPPool pool-a")
	eventually(t, "name mismatch reported", func() string {
		p, _ := h.lastReport()
		if len(p) == 1 && p[0].Field == "metadata.name" && p[0].Where == "etcd:"+ResourcePrefix+"tiers/mismatch" {
			return ""
		}
		return fmt.Sprintf("last report %q", p)
	})
	if got := mustGet(t, h.st.View(), model.Key{Kind: model.KindIPPool, Name: "pool-a"}).GetMeta().Revision; got != poolRev {
		t.Errorf("unchanged IP pool was rewritten: revision %d, want %d", got, poolRev)
	}
	if !h.st.InSync() {
		t.Error("store out of sync while etcd is up")
	}
}

func mustGet(t *testing.T, v *store.View, k model.Key) model.Object {
	t.Helper()
	o, ok := v.Get(k)
	if !ok {
		t.Fatalf("%s not in the store", k)
	}
	return o
}

func TestWatchResumesAfterEtcdRestart(t *testing.T) {
	h := newHarness(t)
	h.put(keyPool, docPool)
	if _, err := h.src.Load(context.Background(), h.st); err != nil {
		t.Fatalf("Load: %v", err)
	}
	h.watch()
	h.put(keyGNP, gnp("allow-web", 10, "all()"))
	h.wantKeys("policy before restart", "IPPool pool-a", "GlobalNetworkPolicy allow-web")
	lists := h.src.lists.Load()

	h.etcd.Stop()
	eventually(t, "out of sync while etcd is down", func() string {
		if h.st.InSync() {
			return "still in sync"
		}
		return ""
	})
	// The objects stay while the datastore is unreachable.
	if d := cmp.Diff([]string{"GlobalNetworkPolicy allow-web", "IPPool pool-a"}, keys(h.st.View())); d != "" {
		t.Fatalf("store changed during the outage (-want +got):\n%s", d)
	}

	h.etcd.StartOn(h.etcd.Port)
	h.connect()
	h.put(keyNP, docNP)
	h.del(keyGNP)
	h.wantKeys("changes after restart", "IPPool pool-a", "NetworkPolicy prod/deny-all")
	eventually(t, "in sync after restart", func() string {
		if !h.st.InSync() {
			return "out of sync"
		}
		return ""
	})
	if got := h.src.lists.Load(); got != lists {
		t.Errorf("the watch re-listed (%d lists, want %d): it should resume from its revision", got, lists)
	}
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	h := newHarness(t)
	h.put(keyPool, docPool)
	h.put(keyGNP, gnp("allow-web", 10, "all()"))
	if _, err := h.src.Load(context.Background(), h.st); err != nil {
		t.Fatalf("Load: %v", err)
	}
	h.watch()
	h.wantKeys("initial state", "IPPool pool-a", "GlobalNetworkPolicy allow-web")
	eventually(t, "watching", func() string {
		if h.src.lists.Load() != 1 {
			return "no list yet"
		}
		return ""
	})
	poolRev := mustGet(t, h.st.View(), model.Key{Kind: model.KindIPPool, Name: "pool-a"}).GetMeta().Revision

	// While the source cannot reach it (etcd serves on another port), the history it
	// would resume from is written and compacted away.
	port := h.etcd.Port
	h.etcd.Stop()
	h.etcd.StartOn(etcdtest.FreePort(t))
	h.connect()
	h.del(keyGNP)
	h.put(keyNP, docNP)
	rev := h.put(keyBlock, docBlock)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := h.cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact: %v", err)
	}
	h.etcd.Stop()
	h.etcd.StartOn(port)

	h.wantKeys("state after compaction", "IPPool pool-a", "NetworkPolicy prod/deny-all", "IPAMBlock 10-65-0-0-26")
	eventually(t, "in sync after re-list", func() string {
		if !h.st.InSync() {
			return "out of sync"
		}
		return ""
	})
	if got := h.src.lists.Load(); got < 2 {
		t.Errorf("lists: got %d, want a second (full re-list after compaction)", got)
	}
	if got := mustGet(t, h.st.View(), model.Key{Kind: model.KindIPPool, Name: "pool-a"}).GetMeta().Revision; got != poolRev {
		t.Errorf("re-list rewrote the unchanged IP pool: revision %d, want %d", got, poolRev)
	}
}

func TestOpen(t *testing.T) {
	src, err := datastore.Open("etcd:http://127.0.0.1:2379,http://127.0.0.2:2379")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if d := cmp.Diff([]string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}, src.(*Source).endpoints); d != "" {
		t.Errorf("endpoints (-want +got):\n%s", d)
	}
	if _, err := datastore.Open("etcd:"); err == nil {
		t.Error("Open(etcd:) succeeded, want an error asking for a URL")
	}
}
