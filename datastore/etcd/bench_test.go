package etcd

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/felis-dev/felis/datastore/internal/etcdtest"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

// wepDoc is a workload endpoint as calico-node's CNI plugin writes it in an etcd datastore.
func wepDoc(i int) (string, string) {
	name := fmt.Sprintf("node--%d-k8s-pod--%d-eth0", i%100, i)
	doc := fmt.Sprintf(`{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":%q,"namespace":"ns-%d",`+
		`"labels":{"app":"app-%d","projectcalico.org/namespace":"ns-%d","projectcalico.org/orchestrator":"k8s"}},`+
		`"spec":{"orchestrator":"k8s","node":"node-%d","pod":"pod-%d","endpoint":"eth0","interfaceName":"cali%011x",`+
		`"ipNetworks":["10.%d.%d.%d/32"],"profiles":["kns.ns-%d"]}}`,
		name, i%50, i%20, i%50, i%100, i, i, 64+i>>16, (i>>8)&255, i&255, i%50)
	return ResourcePrefix + fmt.Sprintf("workloadendpoints/ns-%d/%s", i%50, name), doc
}

func benchClient(b *testing.B, srv *etcdtest.Server) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.URL()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

// BenchmarkLoad lists 10,000 workload endpoints into a fresh store per iteration.
func BenchmarkLoad(b *testing.B) {
	const n = 10000
	srv := etcdtest.Start(b)
	cli := benchClient(b, srv)
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			k, v := wepDoc(j)
			ops = append(ops, clientv3.OpPut(k, v))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	src := New(srv.URL())
	b.ResetTimer()
	for b.Loop() {
		st := store.New()
		if _, err := src.Load(context.Background(), st); err != nil {
			b.Fatal(err)
		}
		if got := st.View().Count(model.KindWorkloadEndpoint); got != n {
			b.Fatalf("loaded %d endpoints, want %d", got, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "objects/s")
}

// BenchmarkWatchLatency measures the time from the start of an etcd write (a policy update)
// to the store holding the new version: etcd's commit, the watch event and the store write.
func BenchmarkWatchLatency(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := benchClient(b, srv)
	src := New(srv.URL())
	st := store.New()
	if _, err := src.Load(context.Background(), st); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = src.Watch(ctx, st, nil) }()
	b.Cleanup(func() { cancel(); <-done })
	key := model.Key{Kind: model.KindGlobalNetworkPolicy, Name: "allow-web"}
	// Wait until the watch is running.
	for src.lists.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	i := 0
	for b.Loop() {
		i++
		changed := st.Changed()
		if _, err := cli.Put(context.Background(), keyGNP, gnp("allow-web", i, "all()")); err != nil {
			b.Fatal(err)
		}
		for {
			if p, ok := store.Get[*model.Policy](st.View(), key); ok && p.Order != nil && *p.Order == float64(i) {
				break
			}
			<-changed
			changed = st.Changed()
		}
	}
}
