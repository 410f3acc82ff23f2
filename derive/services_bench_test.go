package derive

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

// serviceWorld is n ClusterIP services, each with one EndpointSlice of two ready endpoints.
func serviceWorld(n int) []model.Object {
	objs := []model.Object{&model.Node{Meta: model.Meta{Key: model.Key{Kind: model.KindNode, Name: "n1"}}, IPv4Address: netip.MustParsePrefix("192.168.1.10/24")}}
	for i := range n {
		objs = append(objs, &model.Service{Meta: model.Meta{Key: model.Key{Kind: model.KindService, Namespace: "ns", Name: fmt.Sprintf("svc%d", i)}},
			Type: "ClusterIP", ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports: []model.ServicePort{{Name: "http", Protocol: model.ProtoTCP, Port: 80, TargetPort: "8080"}}},
			serviceSlice(i, true))
	}
	return objs
}

func serviceSlice(i int, ready bool) *model.EndpointSlice {
	es := &model.EndpointSlice{Meta: model.Meta{Key: model.Key{Kind: model.KindEndpointSlice, Namespace: "ns", Name: fmt.Sprintf("svc%d-x", i)}},
		ServiceName: fmt.Sprintf("svc%d", i), Ports: []model.EndpointSlicePort{{Name: "http", Protocol: model.ProtoTCP, Port: 8080}}}
	for j := range 2 {
		k := 2*i + j
		es.Endpoints = append(es.Endpoints, model.SliceEndpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(1 + k>>16), byte(k >> 8), byte(k)})},
			Ready: ready || j == 0, Serving: true, NodeName: "n2"})
	}
	return es
}

// BenchmarkServicesDerive is the pure derivation of 10,000 services × 2 endpoints.
func BenchmarkServicesDerive(b *testing.B) {
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: serviceWorld(10_000)}); err != nil {
		b.Fatal(err)
	}
	v := st.View()
	b.ResetTimer()
	for range b.N {
		if got := Services(v, "n1"); len(got) != 10_000 {
			b.Fatalf("%d services", len(got))
		}
	}
}

// BenchmarkServicesDeriverSliceChange is one EndpointSlice flipping an endpoint's readiness
// among 10,000 services, through the incremental Deriver: a cycle costs one service.
func BenchmarkServicesDeriverSliceChange(b *testing.B) {
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: serviceWorld(10_000)}); err != nil {
		b.Fatal(err)
	}
	d := NewDeriver(st, "n1", Options{})
	defer d.Close()
	if _, err := d.Derive(st.View()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := st.Write(store.Batch{Upserts: []model.Object{serviceSlice(4242, i%2 == 1)}}); err != nil {
			b.Fatal(err)
		}
		s, err := d.Derive(st.View())
		if err != nil {
			b.Fatal(err)
		}
		if len(s.Services) != 10_000 {
			b.Fatalf("%d services", len(s.Services))
		}
	}
}
