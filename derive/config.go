package derive

import (
	"cmp"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// Felix's built-in defaults for the settings felis uses (felix/config/config_params.go and the
// projectcalico.org/v3 FelixConfiguration documentation).
const (
	defaultInterfacePrefix = "cali"
	defaultVXLANVNI        = 4096
	defaultVXLANPort       = 4789
	// defaultVXLANMTU is Felix's 0: auto-detect (the host interface MTU less the VXLAN overhead);
	// the applier resolves it.
	defaultVXLANMTU = 0
	// DefaultRouteProtocol is the route protocol number felis marks its routes with, so it never
	// touches routes it does not own. 80 is Felix's own default for the routes it must be able to
	// recognise (dataplanedefs.DefaultRouteProto): distinct from unspec (0), redirect (1),
	// kernel (2), boot (3) and static (4). FelixConfiguration deviceRouteProtocol overrides it
	// as Felix's calculateRouteProtocol does (3, boot, Felix's default for that field, keeps
	// 80; another value replaces it), except that felis also rejects the values it must never
	// claim (0-2 and 4), since it deletes every route carrying its protocol number.
	DefaultRouteProtocol = 80
	rtprotBoot           = 3
	defaultIPSetsMaxSize = 1048576
	defaultChainInsert   = "insert"
	defaultLogPrefix     = "calico-packet"
)

// Felix's default failsafe ports (FailsafeInboundHostPorts / FailsafeOutboundHostPorts).
var (
	defaultFailsafeInbound = []snapshot.FailsafePort{
		{Protocol: model.ProtoTCP, Port: 22}, {Protocol: model.ProtoUDP, Port: 68},
		{Protocol: model.ProtoTCP, Port: 179}, {Protocol: model.ProtoTCP, Port: 2379},
		{Protocol: model.ProtoTCP, Port: 2380}, {Protocol: model.ProtoTCP, Port: 5473},
		{Protocol: model.ProtoTCP, Port: 6443}, {Protocol: model.ProtoTCP, Port: 6666},
		{Protocol: model.ProtoTCP, Port: 6667},
	}
	defaultFailsafeOutbound = []snapshot.FailsafePort{
		{Protocol: model.ProtoUDP, Port: 53}, {Protocol: model.ProtoUDP, Port: 67},
		{Protocol: model.ProtoTCP, Port: 179}, {Protocol: model.ProtoTCP, Port: 2379},
		{Protocol: model.ProtoTCP, Port: 2380}, {Protocol: model.ProtoTCP, Port: 5473},
		{Protocol: model.ProtoTCP, Port: 6443}, {Protocol: model.ProtoTCP, Port: 6666},
		{Protocol: model.ProtoTCP, Port: 6667},
	}
	// ifaceNameRE is the element syntax Felix accepts in an interface prefix list.
	ifaceNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,15}$`)
)

// EffectiveConfig layers FelixConfiguration "node.NODE" over "default" over Felix's
// built-in defaults and returns the configuration the dataplane needs on node. Invalid
// values are ignored (the configLayer below applies); ResolveConfig also returns them as errors.
func EffectiveConfig(v *store.View, node string) snapshot.Config {
	cfg, _ := ResolveConfig(v, node)
	return cfg
}

// ResolveConfig is EffectiveConfig that also returns one error per invalid setting, naming
// the FelixConfiguration and the field ("FelixConfiguration node.n1: spec.vxlanPort: ...").
//
// Rules, per field, as Felix applies them:
//   - a field set in "node.NODE" wins over "default", which wins over the built-in default;
//     an empty string counts as unset (the v3 API omits it);
//   - an invalid value is skipped, so the value from the configLayer below stays in force;
//   - interfacePrefix is a comma-separated list ("cali,tap");
//   - failsafe{In,Out}boundHostPorts is a list of {protocol, port, net}; protocol defaults to
//     tcp; an explicit empty list opens no failsafe ports;
//   - defaultEndpointToHostAction Drop/Accept/Return (any case) maps to Deny/Allow/Return;
//   - vxlanEnabled, when set, decides IPv4 VXLAN; unset, IPv4 VXLAN is on when any IPv4 pool
//     (disabled or not) has vxlanMode Always or CrossSubnet, as Felix's encapsulation
//     calculator decides. IPv6 VXLAN has no override: on when any IPv6 pool uses VXLAN;
//   - vxlanMTU/vxlanMTUV6 0 means auto-detect, left to the applier;
//   - deviceRouteProtocol sets RouteProtocol (see DefaultRouteProtocol).
func ResolveConfig(v *store.View, node string) (snapshot.Config, []error) {
	return ResolveConfigOptions(v, node, Options{})
}

// ConfigOverride is one configuration layer from outside the datastore: a spec with the
// FelixConfiguration field names and value forms, named for error messages ("environment",
// "config file /etc/felis/felis.yaml").
type ConfigOverride struct {
	Name string
	Spec map[string]any
}

// ResolveConfigOptions is ResolveConfig with opts.ConfigOverrides laid over "node.NODE" in
// order, under the same rules (an invalid override value is skipped with an error naming
// the override and field, and the value below stays in force).
func ResolveConfigOptions(v *store.View, node string, opts Options) (snapshot.Config, []error) {
	cfg := snapshot.Config{
		InterfacePrefixes:           []string{defaultInterfacePrefix},
		FailsafeInbound:             slices.Clone(defaultFailsafeInbound),
		FailsafeOutbound:            slices.Clone(defaultFailsafeOutbound),
		DefaultEndpointToHostAction: snapshot.Deny,
		VXLANVNI:                    defaultVXLANVNI,
		VXLANPort:                   defaultVXLANPort,
		VXLANMTU:                    defaultVXLANMTU,
		VXLANMTUV6:                  defaultVXLANMTU,
		RouteProtocol:               DefaultRouteProtocol,
		IPSetsMaxSize:               defaultIPSetsMaxSize,
		ChainInsertMode:             defaultChainInsert,
		LogPrefix:                   defaultLogPrefix,
	}
	var errs []error
	var vxlanOverride *bool
	for _, name := range []string{"default", "node." + node} {
		fc, ok := store.Get[*model.FelixConfiguration](v, model.Key{Kind: model.KindFelixConfiguration, Name: name})
		if !ok {
			continue
		}
		l := configLayer{cfg: &cfg, key: fc.Key}
		l.apply(fc.Spec)
		if l.vxlanEnabled != nil {
			vxlanOverride = l.vxlanEnabled
		}
		errs = append(errs, l.errs...)
	}
	for _, o := range opts.ConfigOverrides {
		l := configLayer{cfg: &cfg, name: o.Name}
		l.apply(o.Spec)
		if l.vxlanEnabled != nil {
			vxlanOverride = l.vxlanEnabled
		}
		errs = append(errs, l.errs...)
	}

	cfg.FailsafeInbound = sortFailsafe(cfg.FailsafeInbound)
	cfg.FailsafeOutbound = sortFailsafe(cfg.FailsafeOutbound)

	v4, v6 := vxlanPoolFamilies(v)
	cfg.VXLANEnabled = v4
	if vxlanOverride != nil {
		cfg.VXLANEnabled = *vxlanOverride
	}
	cfg.VXLANEnabledV6 = v6

	if n, ok := store.Get[*model.Node](v, model.Key{Kind: model.KindNode, Name: node}); ok {
		cfg.NodeIPv4 = n.IPv4Address
		cfg.NodeIPv6 = n.IPv6Address
		if n.VXLANTunnelAddr.IsValid() {
			cfg.VXLANTunnelAddr = n.VXLANTunnelAddr
			cfg.VXLANTunnelMAC = vtepMAC(n.Key.Name, n.VXLANTunnelMAC, false)
		}
		if n.VXLANTunnelAddrV6.IsValid() {
			cfg.VXLANTunnelAddrV6 = n.VXLANTunnelAddrV6
			cfg.VXLANTunnelMACV6 = vtepMAC(n.Key.Name, n.VXLANTunnelMACV6, true)
		}
	}
	return cfg, errs
}

// vxlanPoolFamilies reports whether any IPv4 and any IPv6 pool uses VXLAN. Felix counts
// disabled pools too: existing workloads in them still need the tunnel.
func vxlanPoolFamilies(v *store.View) (v4, v6 bool) {
	for p := range store.List[*model.IPPool](v, model.KindIPPool) {
		if p.VXLANMode != model.EncapAlways && p.VXLANMode != model.EncapCrossSubnet {
			continue
		}
		if p.CIDR.Addr().Is4() {
			v4 = true
		} else if p.CIDR.IsValid() {
			v6 = true
		}
	}
	return v4, v6
}

// vtepMAC returns the configured VXLAN MAC, or the one Felix derives when none is set: the
// byte 'f' followed by the first five bytes of SHA-1 of the node name (NAME-v6 for IPv6),
// which is also the MAC Felix gives that node's VXLAN device.
func vtepMAC(nodeName, configured string, ipv6 bool) string {
	if configured != "" {
		if hw, err := net.ParseMAC(configured); err == nil {
			return hw.String()
		}
		return configured
	}
	if ipv6 {
		nodeName += "-v6"
	}
	sum := sha1.Sum([]byte(nodeName))
	return net.HardwareAddr(append([]byte{'f'}, sum[:5]...)).String()
}

// configLayer applies one FelixConfiguration's spec over cfg.
type configLayer struct {
	cfg          *snapshot.Config
	key          model.Key
	name         string // names the layer in errors instead of key when set
	errs         []error
	vxlanEnabled *bool
}

func (l *configLayer) fail(field string, val any, why string) {
	if l.name != "" {
		l.errs = append(l.errs, fmt.Errorf("%s: %s: %v: %s; ignored", l.name, field, val, why))
		return
	}
	l.errs = append(l.errs, fmt.Errorf("%s: spec.%s: %v: %s; ignored", l.key, field, val, why))
}

// apply reads the fields felis uses, in a fixed order so errors come out deterministically.
func (l *configLayer) apply(spec map[string]any) {
	if val, ok := configValue(spec, "interfacePrefix"); ok {
		if prefixes, ok := interfacePrefixes(val); ok {
			l.cfg.InterfacePrefixes = prefixes
		} else {
			l.fail("interfacePrefix", val, "want a comma-separated list of interface name prefixes (1-15 of a-z A-Z 0-9 _ -)")
		}
	}
	if val, ok := configValue(spec, "failsafeInboundHostPorts"); ok {
		if ports, why := failsafePorts(val); why == "" {
			l.cfg.FailsafeInbound = ports
		} else {
			l.fail("failsafeInboundHostPorts", val, why)
		}
	}
	if val, ok := configValue(spec, "failsafeOutboundHostPorts"); ok {
		if ports, why := failsafePorts(val); why == "" {
			l.cfg.FailsafeOutbound = ports
		} else {
			l.fail("failsafeOutboundHostPorts", val, why)
		}
	}
	if val, ok := configValue(spec, "defaultEndpointToHostAction"); ok {
		s, _ := val.(string)
		switch strings.ToLower(s) {
		case "drop":
			l.cfg.DefaultEndpointToHostAction = snapshot.Deny
		case "accept":
			l.cfg.DefaultEndpointToHostAction = snapshot.Allow
		case "return":
			l.cfg.DefaultEndpointToHostAction = snapshot.Return
		default:
			l.fail("defaultEndpointToHostAction", val, "want Drop, Accept or Return")
		}
	}
	if val, ok := configValue(spec, "vxlanEnabled"); ok {
		if b, ok := val.(bool); ok {
			l.vxlanEnabled = &b
		} else {
			l.fail("vxlanEnabled", val, "want true or false")
		}
	}
	l.intField(spec, "vxlanVNI", 1, 1<<24-1, &l.cfg.VXLANVNI)
	l.intField(spec, "vxlanPort", 1, 65535, &l.cfg.VXLANPort)
	l.intField(spec, "vxlanMTU", 0, 65535, &l.cfg.VXLANMTU)
	l.intField(spec, "vxlanMTUV6", 0, 65535, &l.cfg.VXLANMTUV6)
	if val, ok := configValue(spec, "deviceRouteProtocol"); ok {
		n, isInt := configInt(val)
		switch {
		case !isInt || n < 0 || n > 255:
			l.fail("deviceRouteProtocol", val, "want a route protocol number 0-255")
		case n == rtprotBoot:
			// Felix's default for this field; Felix then uses its own protocol for the
			// routes it must own, and so does felis.
			l.cfg.RouteProtocol = DefaultRouteProtocol
		case n <= 4:
			l.fail("deviceRouteProtocol", val, "reserved for the kernel and other route owners (0-2, 4); felis needs its own protocol number")
		default:
			l.cfg.RouteProtocol = int(n)
		}
	}
	l.intField(spec, "maxIpsetSize", 1, math.MaxInt32, &l.cfg.IPSetsMaxSize)
	if val, ok := configValue(spec, "chainInsertMode"); ok {
		s, _ := val.(string)
		switch m := strings.ToLower(s); m {
		case "insert", "append":
			l.cfg.ChainInsertMode = m
		default:
			l.fail("chainInsertMode", val, "want Insert or Append")
		}
	}
	if val, ok := configValue(spec, "logPrefix"); ok {
		if s, ok := val.(string); ok {
			l.cfg.LogPrefix = s
		} else {
			l.fail("logPrefix", val, "want a string")
		}
	}
}

func (l *configLayer) intField(spec map[string]any, field string, lo, hi int64, dst *int) {
	val, ok := configValue(spec, field)
	if !ok {
		return
	}
	n, ok := configInt(val)
	if !ok || n < lo || n > hi {
		l.fail(field, val, fmt.Sprintf("want an integer from %d to %d", lo, hi))
		return
	}
	*dst = int(n)
}

// configValue returns a field's value unless it is absent, null or the empty string (all "unset").
func configValue(spec map[string]any, field string) (any, bool) {
	val, ok := spec[field]
	if !ok || val == nil || val == "" {
		return nil, false
	}
	return val, true
}

// configInt accepts the integer forms a YAML or JSON decoder produces.
func configInt(val any) (int64, bool) {
	switch n := val.(type) {
	case int:
		return int64(n), true
	case int32:
		return int64(n), true
	case int64:
		return n, true
	case uint16:
		return int64(n), true
	case uint32:
		return int64(n), true
	case uint64:
		if n > math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > 1<<53 {
			return 0, false
		}
		return int64(n), true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

func interfacePrefixes(val any) ([]string, bool) {
	s, ok := val.(string)
	if !ok {
		return nil, false
	}
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		p = strings.TrimSpace(p)
		if !ifaceNameRE.MatchString(p) {
			return nil, false
		}
		out = append(out, p)
	}
	return out, true
}

// failsafePorts parses a list of {protocol, port, net}; it returns a reason when invalid.
func failsafePorts(val any) ([]snapshot.FailsafePort, string) {
	list, ok := val.([]any)
	if !ok {
		return nil, "want a list of {protocol, port, net}"
	}
	out := make([]snapshot.FailsafePort, 0, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Sprintf("entry %d: want {protocol, port, net}", i)
		}
		fp := snapshot.FailsafePort{Protocol: model.ProtoTCP}
		if p, ok := configValue(m, "protocol"); ok {
			s, _ := p.(string)
			switch strings.ToLower(s) {
			case "tcp":
				fp.Protocol = model.ProtoTCP
			case "udp":
				fp.Protocol = model.ProtoUDP
			case "sctp":
				fp.Protocol = model.ProtoSCTP
			default:
				return nil, fmt.Sprintf("entry %d: protocol %v: want TCP, UDP or SCTP", i, p)
			}
		}
		port, ok := configInt(m["port"])
		if !ok || port < 1 || port > 65535 {
			return nil, fmt.Sprintf("entry %d: port %v: want 1-65535", i, m["port"])
		}
		fp.Port = uint16(port)
		if n, ok := configValue(m, "net"); ok {
			s, _ := n.(string)
			pfx, err := parsePrefixOrAddr(s)
			if err != nil {
				return nil, fmt.Sprintf("entry %d: net %v: want a CIDR", i, n)
			}
			fp.Net = pfx
		}
		out = append(out, fp)
	}
	return out, ""
}

// sortFailsafe puts failsafe ports in canonical order, (protocol, port, net), without duplicates.
func sortFailsafe(ports []snapshot.FailsafePort) []snapshot.FailsafePort {
	slices.SortFunc(ports, func(a, b snapshot.FailsafePort) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port), cmpPrefix(a.Net, b.Net))
	})
	if len(ports) == 0 {
		return nil
	}
	return slices.Compact(ports)
}

// parsePrefixOrAddr parses "10.0.0.0/8" or a bare address (a /32 or /128), masked.
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// cmpPrefix orders prefixes by address, then length; the zero prefix sorts first.
func cmpPrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}
