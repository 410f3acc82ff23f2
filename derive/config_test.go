package derive_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/snapshot"
)

func cfgFelix(name string, spec map[string]any) *model.FelixConfiguration {
	return &model.FelixConfiguration{Meta: rtMeta(model.KindFelixConfiguration, "", name), Spec: spec}
}

// builtIn is Felix's built-in configuration as felis exposes it, written out field by field
// from felix/config/config_params.go so a changed default fails here.
func builtIn() snapshot.Config {
	tcp, udp := model.ProtoTCP, model.ProtoUDP
	return snapshot.Config{
		InterfacePrefixes: []string{"cali"},
		FailsafeInbound: []snapshot.FailsafePort{
			{Protocol: tcp, Port: 22}, {Protocol: tcp, Port: 179}, {Protocol: tcp, Port: 2379},
			{Protocol: tcp, Port: 2380}, {Protocol: tcp, Port: 5473}, {Protocol: tcp, Port: 6443},
			{Protocol: tcp, Port: 6666}, {Protocol: tcp, Port: 6667}, {Protocol: udp, Port: 68},
		},
		FailsafeOutbound: []snapshot.FailsafePort{
			{Protocol: tcp, Port: 179}, {Protocol: tcp, Port: 2379}, {Protocol: tcp, Port: 2380},
			{Protocol: tcp, Port: 5473}, {Protocol: tcp, Port: 6443}, {Protocol: tcp, Port: 6666},
			{Protocol: tcp, Port: 6667}, {Protocol: udp, Port: 53}, {Protocol: udp, Port: 67},
		},
		DefaultEndpointToHostAction: snapshot.Deny,
		VXLANVNI:                    4096,
		VXLANPort:                   4789,
		RouteProtocol:               80,
		IPSetsMaxSize:               1048576,
		ChainInsertMode:             "insert",
		LogPrefix:                   "calico-packet",
	}
}

func with(f func(*snapshot.Config)) snapshot.Config {
	c := builtIn()
	f(&c)
	return c
}

var cfgCmp = []cmp.Option{
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
}

func TestEffectiveConfig(t *testing.T) {
	tests := []struct {
		name     string
		objs     []model.Object
		want     snapshot.Config
		wantErrs []string // substrings, one per expected error, in order
	}{{
		name: "built-in defaults only",
		want: builtIn(),
	}, {
		name: "default layer over built-ins (YAML-decoded ints)",
		objs: []model.Object{cfgFelix("default", map[string]any{
			"interfacePrefix":             "cali,tap",
			"defaultEndpointToHostAction": "Accept",
			"vxlanVNI":                    4097,
			"vxlanPort":                   int64(8472),
			"vxlanMTU":                    1400,
			"vxlanMTUV6":                  1380,
			"maxIpsetSize":                2048,
			"chainInsertMode":             "Append",
			"logPrefix":                   "felis",
			"deviceRouteProtocol":         99,
		})},
		want: with(func(c *snapshot.Config) {
			c.InterfacePrefixes = []string{"cali", "tap"}
			c.DefaultEndpointToHostAction = snapshot.Allow
			c.VXLANVNI, c.VXLANPort, c.VXLANMTU, c.VXLANMTUV6 = 4097, 8472, 1400, 1380
			c.IPSetsMaxSize, c.ChainInsertMode, c.LogPrefix, c.RouteProtocol = 2048, "append", "felis", 99
		}),
	}, {
		name: "node layer over default over built-ins, field by field (JSON-decoded floats)",
		objs: []model.Object{
			cfgFelix("default", map[string]any{"vxlanPort": float64(8472), "logPrefix": "cluster", "defaultEndpointToHostAction": "Return"}),
			cfgFelix("node.n1", map[string]any{"vxlanPort": float64(4790), "chainInsertMode": "append"}),
			cfgFelix("node.n2", map[string]any{"logPrefix": "not-mine", "vxlanVNI": float64(1)}),
		},
		want: with(func(c *snapshot.Config) {
			c.VXLANPort, c.LogPrefix, c.ChainInsertMode = 4790, "cluster", "append"
			c.DefaultEndpointToHostAction = snapshot.Return
		}),
	}, {
		name: "failsafe ports: protocol defaults to tcp, nets, any case; explicit empty list opens none",
		objs: []model.Object{
			cfgFelix("default", map[string]any{
				"failsafeInboundHostPorts": []any{
					map[string]any{"port": float64(22)},
					map[string]any{"protocol": "UDP", "port": float64(53), "net": "10.0.0.0/8"},
					map[string]any{"protocol": "sctp", "port": float64(9000), "net": "fd00::1"},
				},
				"failsafeOutboundHostPorts": []any{map[string]any{"protocol": "tcp", "port": 443}},
			}),
			cfgFelix("node.n1", map[string]any{"failsafeOutboundHostPorts": []any{}}),
		},
		want: with(func(c *snapshot.Config) {
			c.FailsafeInbound = []snapshot.FailsafePort{
				{Protocol: model.ProtoTCP, Port: 22},
				{Protocol: model.ProtoUDP, Port: 53, Net: pfx("10.0.0.0/8")},
				{Protocol: model.ProtoSCTP, Port: 9000, Net: pfx("fd00::1/128")},
			}
			c.FailsafeOutbound = nil
		}),
	}, {
		name: "invalid values are ignored: the layer below stays in force, each error names resource and field",
		objs: []model.Object{
			cfgFelix("default", map[string]any{"vxlanPort": 8472, "logPrefix": "kept"}),
			cfgFelix("node.n1", map[string]any{
				"interfacePrefix":             "cali,this-name-is-far-too-long",
				"failsafeInboundHostPorts":    []any{map[string]any{"protocol": "icmp", "port": 1}},
				"failsafeOutboundHostPorts":   []any{map[string]any{"port": 70000}},
				"defaultEndpointToHostAction": "Reject",
				"vxlanEnabled":                "yes",
				"vxlanVNI":                    1 << 24,
				"vxlanPort":                   0.5,
				"vxlanMTU":                    -1,
				"deviceRouteProtocol":         2,
				"maxIpsetSize":                0,
				"chainInsertMode":             "prepend",
				"logPrefix":                   42,
			}),
		},
		want: with(func(c *snapshot.Config) { c.VXLANPort, c.LogPrefix = 8472, "kept" }),
		wantErrs: []string{
			"FelixConfiguration node.n1: spec.interfacePrefix",
			"FelixConfiguration node.n1: spec.failsafeInboundHostPorts: [map[port:1 protocol:icmp]]: entry 0: protocol icmp",
			"FelixConfiguration node.n1: spec.failsafeOutboundHostPorts: [map[port:70000]]: entry 0: port 70000",
			"FelixConfiguration node.n1: spec.defaultEndpointToHostAction: Reject",
			"FelixConfiguration node.n1: spec.vxlanEnabled: yes",
			"FelixConfiguration node.n1: spec.vxlanVNI: 16777216",
			"FelixConfiguration node.n1: spec.vxlanPort: 0.5",
			"FelixConfiguration node.n1: spec.vxlanMTU: -1",
			"FelixConfiguration node.n1: spec.deviceRouteProtocol: 2",
			"FelixConfiguration node.n1: spec.maxIpsetSize: 0",
			"FelixConfiguration node.n1: spec.chainInsertMode: prepend",
			"FelixConfiguration node.n1: spec.logPrefix: 42",
		},
	}, {
		name: "deviceRouteProtocol 3 (Felix's boot default) keeps felis's own protocol",
		objs: []model.Object{cfgFelix("default", map[string]any{"deviceRouteProtocol": 99}), cfgFelix("node.n1", map[string]any{"deviceRouteProtocol": 3})},
		want: builtIn(),
	}, {
		name: "empty strings and nulls are unset",
		objs: []model.Object{
			cfgFelix("default", map[string]any{"logPrefix": "cluster", "interfacePrefix": "tap"}),
			cfgFelix("node.n1", map[string]any{"logPrefix": "", "interfacePrefix": nil}),
		},
		want: with(func(c *snapshot.Config) { c.LogPrefix, c.InterfacePrefixes = "cluster", []string{"tap"} }),
	}, {
		name: "an IPv4 VXLAN pool, even disabled, turns IPv4 VXLAN on; node addresses and tunnel MAC come from the Node",
		objs: []model.Object{
			func() model.Object {
				p := rtPool("p", "172.16.0.0/16", model.EncapCrossSubnet)
				p.Disabled = true
				return p
			}(),
			rtNode("n1", "10.0.0.1/24", "172.16.0.1", "66:AA:BB:CC:DD:EE"),
		},
		want: with(func(c *snapshot.Config) {
			c.VXLANEnabled = true
			c.NodeIPv4 = pfx("10.0.0.1/24")
			c.VXLANTunnelAddr, c.VXLANTunnelMAC = addr("172.16.0.1"), "66:aa:bb:cc:dd:ee"
		}),
	}, {
		name: "vxlanEnabled false wins over a VXLAN pool",
		objs: []model.Object{
			rtPool("p", "172.16.0.0/16", model.EncapAlways),
			cfgFelix("default", map[string]any{"vxlanEnabled": false}),
		},
		want: builtIn(),
	}, {
		name: "vxlanEnabled: node layer true wins over default false, with no VXLAN pool",
		objs: []model.Object{
			rtPool("p", "172.16.0.0/16", model.EncapNever),
			cfgFelix("default", map[string]any{"vxlanEnabled": false}),
			cfgFelix("node.n1", map[string]any{"vxlanEnabled": true}),
		},
		want: with(func(c *snapshot.Config) { c.VXLANEnabled = true }),
	}, {
		name: "IPv6 VXLAN follows IPv6 pools only; a missing MAC is Felix's derived one",
		objs: []model.Object{
			rtPool("p6", "fd10::/112", model.EncapAlways),
			rtNode6("n1", "fd00::1/64", "fd10::1", ""),
		},
		want: with(func(c *snapshot.Config) {
			c.VXLANEnabledV6 = true
			c.NodeIPv6 = pfx("fd00::1/64")
			// 0x66 then SHA-1("n1-v6")[0:5].
			c.VXLANTunnelAddrV6, c.VXLANTunnelMACV6 = addr("fd10::1"), "66:46:32:55:72:28"
		}),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := rtView(t, tc.objs...)
			got, errs := derive.ResolveConfig(v, "n1")
			if d := cmp.Diff(tc.want, got, cfgCmp...); d != "" {
				t.Errorf("config (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.want, derive.EffectiveConfig(v, "n1"), cfgCmp...); d != "" {
				t.Errorf("EffectiveConfig differs from ResolveConfig (-want +got):\n%s", d)
			}
			var gotErrs []string
			for _, e := range errs {
				gotErrs = append(gotErrs, e.Error())
			}
			if len(gotErrs) != len(tc.wantErrs) {
				t.Fatalf("errors: want %d, got %d:\n%s", len(tc.wantErrs), len(gotErrs), strings.Join(gotErrs, "\n"))
			}
			for i, w := range tc.wantErrs {
				if !strings.HasPrefix(gotErrs[i], w) {
					t.Errorf("error %d: want prefix %q, got %q", i, w, gotErrs[i])
				}
			}
		})
	}
}
