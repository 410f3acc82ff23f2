package derive

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// randomWorld generates random objects over a small universe of names, labels and nodes so
// that sequences of writes collide, flip, delete and re-create the same objects often.
type randomWorld struct {
	rng *rand.Rand
}

var (
	worldNodes  = []string{"n1", "n2", "n3"}
	worldNS     = []string{"a", "b"}
	worldLabels = []string{"app", "tier", "env"}
	worldValues = []string{"x", "y"}
)

func (w *randomWorld) pick(s []string) string { return s[w.rng.IntN(len(s))] }

func (w *randomWorld) labels() model.Labels {
	l := model.Labels{}
	for _, k := range worldLabels {
		if w.rng.IntN(2) == 0 {
			l[k] = w.pick(worldValues)
		}
	}
	return l
}

func (w *randomWorld) selector() string {
	k, v := w.pick(worldLabels), w.pick(worldValues)
	switch w.rng.IntN(5) {
	case 0:
		return fmt.Sprintf("has(%s)", k)
	case 1:
		return fmt.Sprintf("%s == '%s'", k, v)
	case 2:
		return fmt.Sprintf("%s != '%s'", k, v)
	case 3:
		return "all()"
	}
	return fmt.Sprintf("%s in {'%s'} && !has(%s)", k, v, w.pick(worldLabels))
}

func (w *randomWorld) object() model.Object {
	switch w.rng.IntN(14) {
	case 11:
		return w.service()
	case 12:
		return w.endpointSlice()
	case 13:
		spec := map[string]any{}
		if w.rng.IntN(2) == 0 {
			spec["kubeNodePortRanges"] = []any{w.pick([]string{"30000:30001", "31000-32000", "30001"})}
		}
		return &model.FelixConfiguration{Meta: model.Meta{Key: model.Key{Kind: model.KindFelixConfiguration, Name: w.pick([]string{"default", "node.n1", "node.n2"})}}, Spec: spec}
	case 9:
		i := w.rng.IntN(2)
		return &model.HostEndpoint{Meta: model.Meta{Key: model.Key{Kind: model.KindHostEndpoint, Name: fmt.Sprintf("hep%d", i)}},
			Node: w.pick(worldNodes), InterfaceName: "eth0", Labels: w.labels(),
			ExpectedIPs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("192.168.9.%d", 1+w.rng.IntN(3)))}}
	case 10:
		i := w.rng.IntN(4)
		cidr := netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/26", i))
		return &model.IPAMBlock{Meta: model.Meta{Key: model.Key{Kind: model.KindIPAMBlock, Name: fmt.Sprintf("10-0-%d-0-26", i)}},
			CIDR: cidr, AffinityNode: w.pick(worldNodes)}
	case 0, 1, 2:
		ns, i := w.pick(worldNS), w.rng.IntN(6)
		e := wep(ns, fmt.Sprintf("pod%d", i), w.pick(worldNodes), w.labels(), fmt.Sprintf("10.0.%d.%d/32", i, w.rng.IntN(3)))
		if w.rng.IntN(2) == 0 {
			e.Ports = []model.NamedPort{{Name: "http", Protocol: model.ProtoTCP, Port: uint16(8080 + w.rng.IntN(2))}}
		}
		// Key by namespace and pod only, so a pod can move between nodes.
		e.Key.Name = fmt.Sprintf("pod%d-eth0", i)
		return e
	case 3, 4:
		kind := model.KindGlobalNetworkPolicy
		ns := ""
		if w.rng.IntN(2) == 0 {
			kind, ns = model.KindNetworkPolicy, w.pick(worldNS)
		}
		p := &model.Policy{
			Meta:     model.Meta{Key: model.Key{Kind: kind, Namespace: ns, Name: fmt.Sprintf("pol%d", w.rng.IntN(4))}},
			Tier:     w.pick([]string{"default", "sec"}),
			Order:    f64(float64(w.rng.IntN(3))),
			Selector: sel(w.selector()),
		}
		act := w.pick([]string{"Allow", "Deny", "Pass"})
		rule := model.Rule{Action: model.Action(act), Protocol: u8(model.ProtoTCP), Source: model.EntityRule{Selector: sel(w.selector())}}
		if w.rng.IntN(2) == 0 {
			rule.Destination.Ports = []model.Port{{Name: "http"}}
		}
		if w.rng.IntN(3) == 0 {
			// Calico's services match, over the random services' slices.
			rule.Destination = model.EntityRule{Services: &model.ServiceMatch{Name: fmt.Sprintf("svc%d", w.rng.IntN(3)), Namespace: w.pick(worldNS)}}
		}
		if w.rng.IntN(2) == 0 {
			p.Ingress = []model.Rule{rule}
			p.Types = []model.PolicyType{model.PolicyTypeIngress}
		} else {
			p.Egress = []model.Rule{rule}
			p.Types = []model.PolicyType{model.PolicyTypeEgress}
		}
		return p
	case 5:
		ns := w.pick(worldNS)
		return &model.Profile{
			Meta:          model.Meta{Key: model.Key{Kind: model.KindProfile, Name: "kns." + ns}},
			LabelsToApply: model.Labels{"pcns.team": w.pick(worldValues), w.pick(worldLabels): w.pick(worldValues)},
			Ingress:       []model.Rule{{Action: model.ActionAllow}},
			Egress:        []model.Rule{{Action: model.ActionAllow}},
		}
	case 6:
		act := model.ActionPass
		if w.rng.IntN(2) == 0 {
			act = model.ActionDeny
		}
		return &model.Tier{Meta: model.Meta{Key: model.Key{Kind: model.KindTier, Name: "sec"}}, Order: f64(float64(w.rng.IntN(3) * 500)), DefaultAction: act}
	case 7:
		return &model.NetworkSet{Meta: model.Meta{Key: model.Key{Kind: model.KindGlobalNetworkSet, Name: fmt.Sprintf("gns%d", w.rng.IntN(3))}},
			Labels: w.labels(), Nets: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("192.0.%d.0/24", w.rng.IntN(4)))}}
	default:
		n := w.pick(worldNodes)
		return &model.Node{Meta: model.Meta{Key: model.Key{Kind: model.KindNode, Name: n}},
			IPv4Address:     netip.MustParsePrefix(fmt.Sprintf("192.168.%d.%d/24", w.rng.IntN(2), 1+w.rng.IntN(3))),
			VXLANTunnelAddr: netip.MustParseAddr(fmt.Sprintf("10.9.0.%d", 1+w.rng.IntN(3))), VXLANTunnelMAC: "66:00:00:00:00:01"}
	}
}

// service is a random Kubernetes service over a small universe of names, ports and types.
func (w *randomWorld) service() *model.Service {
	i := w.rng.IntN(3)
	svc := &model.Service{
		Meta:                 model.Meta{Key: model.Key{Kind: model.KindService, Namespace: w.pick(worldNS), Name: fmt.Sprintf("svc%d", i)}},
		Type:                 w.pick([]string{"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}),
		ExternalTrafficLocal: w.rng.IntN(2) == 0,
		InternalTrafficLocal: w.rng.IntN(3) == 0,
	}
	if w.rng.IntN(5) > 0 {
		svc.ClusterIPs = []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.96.0.%d", 1+i))}
	}
	if w.rng.IntN(4) == 0 {
		svc.ExternalIPs = []netip.Addr{netip.MustParseAddr("203.0.113.7")}
	}
	if w.rng.IntN(4) == 0 {
		svc.LoadBalancerIPs = []netip.Addr{netip.MustParseAddr("198.51.100.1")}
	}
	if w.rng.IntN(3) == 0 {
		svc.SessionAffinityClientIP, svc.SessionAffinityTimeoutSeconds = true, 60
	}
	for j := w.rng.IntN(3); j > 0; j-- {
		svc.Ports = append(svc.Ports, model.ServicePort{Name: w.pick([]string{"", "http"}), Protocol: []uint8{model.ProtoTCP, model.ProtoUDP}[w.rng.IntN(2)],
			Port: 80, TargetPort: "http", NodePort: uint16(30000 + w.rng.IntN(3))})
	}
	return svc
}

// endpointSlice is a random slice of one of the random services.
func (w *randomWorld) endpointSlice() *model.EndpointSlice {
	es := &model.EndpointSlice{
		Meta:        model.Meta{Key: model.Key{Kind: model.KindEndpointSlice, Namespace: w.pick(worldNS), Name: fmt.Sprintf("slice%d", w.rng.IntN(4))}},
		ServiceName: fmt.Sprintf("svc%d", w.rng.IntN(3)),
	}
	if w.rng.IntN(5) == 0 {
		es.ServiceName = ""
	}
	es.Ports = []model.EndpointSlicePort{{Name: w.pick([]string{"", "http"}), Protocol: model.ProtoTCP, Port: uint16(8080 + w.rng.IntN(2))}}
	if w.rng.IntN(2) == 0 {
		es.Ports = append(es.Ports, model.EndpointSlicePort{Name: "http", Protocol: model.ProtoUDP, Port: 53})
	}
	for j := w.rng.IntN(4); j > 0; j-- {
		ready := w.rng.IntN(3) > 0
		es.Endpoints = append(es.Endpoints, model.SliceEndpoint{
			Addresses: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", w.rng.IntN(2), w.rng.IntN(3)))},
			Ready:     ready, Serving: ready || w.rng.IntN(2) == 0, Terminating: !ready, NodeName: w.pick(worldNodes),
		})
	}
	return es
}

// TestDeriverEqualsDerive drives random write sequences through the store and checks, after
// every batch, that the incremental Deriver returns byte-for-byte what the pure Derive
// returns for the same view. Two Derivers run side by side: one primed on the empty store
// (every object reaches it as a change) and one created afresh every few steps (its first
// cycle builds from a populated store in bulk; the steps after it update that state).
func TestDeriverEqualsDerive(t *testing.T) {
	withBackends, withNodePorts, withServiceSets := 0, 0, 0 // the world must exercise services, not just allow them
	defer func() {
		if withBackends == 0 || withNodePorts == 0 || withServiceSets == 0 {
			t.Errorf("no snapshot had a service with backends (%d), a NodePort frontend (%d) or a filled services-rule IP set (%d)",
				withBackends, withNodePorts, withServiceSets)
		}
	}()
	for seed := uint64(1); seed <= 40; seed++ {
		w := &randomWorld{rng: rand.New(rand.NewPCG(seed, 7))}
		st := store.New()
		d := NewDeriver(st, "n1", Options{})
		var fresh *Deriver
		base := []model.Object{&model.IPPool{Meta: model.Meta{Key: model.Key{Kind: model.KindIPPool, Name: "p"}},
			CIDR: netip.MustParsePrefix("10.0.0.0/16"), VXLANMode: model.EncapAlways, BlockSize: 26}}
		if _, err := st.Write(store.Batch{Upserts: base}); err != nil {
			t.Fatal(err)
		}
		live := map[model.Key]bool{}
		for step := 0; step < 60; step++ {
			var b store.Batch
			for n := 1 + w.rng.IntN(3); n > 0; n-- {
				if w.rng.IntN(4) == 0 && len(live) > 0 {
					for k := range live { // delete an arbitrary live object
						b.Deletes = append(b.Deletes, k)
						delete(live, k)
						break
					}
					continue
				}
				o := w.object()
				b.Upserts = append(b.Upserts, o)
				live[o.GetMeta().Key] = true
			}
			if _, err := st.Write(b); err != nil {
				t.Fatal(err)
			}
			v := st.View()
			want, err := Derive(v, "n1", Options{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Derive(v)
			if err != nil {
				t.Fatal(err)
			}
			if step%7 == 3 {
				if fresh != nil {
					fresh.Close()
				}
				fresh = NewDeriver(st, "n1", Options{})
			}
			var gotFresh *snapshot.Snapshot
			if fresh != nil {
				if gotFresh, err = fresh.Derive(v); err != nil {
					t.Fatal(err)
				}
				if step%14 == 10 {
					// Half of the time the fresh Deriver continues with every holder in
					// its map (what it does when the store's order is not the one it
					// binary-searches).
					fresh.holdersToMap()
				}
			}
			for _, set := range want.IPSets {
				if strings.HasPrefix(set.Source, "service ") && len(set.Members) > 0 {
					withServiceSets++
				}
			}
			for _, sv := range want.Services {
				if len(sv.Backends) > 0 {
					withBackends++
				}
				if slices.ContainsFunc(sv.Frontends, func(f snapshot.Frontend) bool { return f.Kind == FrontendNodePort }) {
					withNodePorts++
				}
			}
			wj, _ := want.JSON()
			gj, _ := got.JSON()
			if !bytes.Equal(wj, gj) {
				wy, _ := want.YAML()
				gy, _ := got.YAML()
				t.Fatalf("seed %d step %d: Deriver differs from Derive:\n%s", seed, step, lineDiff(string(wy), string(gy)))
			}
			if gotFresh != nil {
				if fj, _ := gotFresh.JSON(); !bytes.Equal(wj, fj) {
					wy, _ := want.YAML()
					fy, _ := gotFresh.YAML()
					t.Fatalf("seed %d step %d: Deriver built at step %d differs from Derive:\n%s", seed, step, step-(step+4)%7, lineDiff(string(wy), string(fy)))
				}
			}
		}
		d.Close()
		if fresh != nil {
			fresh.Close()
		}
	}
}

// lineDiff shows the first differing lines of two texts.
func lineDiff(a, b string) string {
	al, bl := bytes.Split([]byte(a), []byte("\n")), bytes.Split([]byte(b), []byte("\n"))
	var out bytes.Buffer
	shown := 0
	for i := 0; i < max(len(al), len(bl)) && shown < 12; i++ {
		var x, y []byte
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if !bytes.Equal(x, y) {
			fmt.Fprintf(&out, "line %d:\n  Derive:  %s\n  Deriver: %s\n", i+1, x, y)
			shown++
		}
	}
	return out.String()
}
