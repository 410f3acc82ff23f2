package convert

import (
	"fmt"
	"net/netip"
	"strings"

	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	"github.com/projectcalico/calico/libcalico-go/lib/selector/parser"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
)

// Label prefixes and names Calico's Kubernetes backend uses.
const (
	labelNamespace      = "projectcalico.org/namespace"
	labelOrchestrator   = "projectcalico.org/orchestrator"
	labelServiceAccount = "projectcalico.org/serviceaccount"
	labelName           = "projectcalico.org/name"
	prefixNamespace     = "pcns."
	prefixSA            = "pcsa."
	profileNSPrefix     = "kns."
	profileSAPrefix     = "ksa."
	orchestratorK8s     = "k8s"
)

// protocolNumbers maps the protocol names Calico's validator accepts (exact case) to numbers.
var protocolNumbers = map[string]uint8{
	"TCP": model.ProtoTCP, "UDP": model.ProtoUDP, "ICMP": model.ProtoICMP,
	"ICMPv6": model.ProtoICMPv6, "SCTP": model.ProtoSCTP, "UDPLite": model.ProtoUDPLite,
}

// convertRules converts a v3 rule list; ns is the policy's namespace ("" for global
// policies and profiles).
func convertRules(path string, rules []apiv3.Rule, ns string, e *errs) []model.Rule {
	if len(rules) == 0 {
		return nil
	}
	out := make([]model.Rule, len(rules))
	for i := range rules {
		out[i] = convertRule(idx(path, i), &rules[i], ns, e)
	}
	return out
}

// convertRule validates one v3 rule as Calico's validateRule/validateEntityRule do and
// converts it as the update processors' RuleAPIV3ToBackend does.
func convertRule(path string, r *apiv3.Rule, ns string, e *errs) model.Rule {
	out := model.Rule{Action: model.Action(r.Action)}
	switch r.Action {
	case apiv3.Allow, apiv3.Deny, apiv3.Log, apiv3.Pass:
	case "":
		e.add(path+".action", "missing; expected Allow, Deny, Log or Pass")
	default:
		e.add(path+".action", "invalid action %q; expected Allow, Deny, Log or Pass", r.Action)
	}
	if r.IPVersion != nil {
		switch *r.IPVersion {
		case 4, 6:
			out.IPVersion = *r.IPVersion
		default:
			e.add(path+".ipVersion", "invalid IP version %d; expected 4 or 6", *r.IPVersion)
		}
	}
	out.Protocol = protocol(path+".protocol", r.Protocol, e)
	out.NotProtocol = protocol(path+".notProtocol", r.NotProtocol, e)
	// Calico compares protocols by name here (ICMP fields need protocol "ICMP" or "ICMPv6").
	isNamed := func(p *numorstring.Protocol, name string) bool {
		return p != nil && p.Type == numorstring.NumOrStringString && p.StrVal == name
	}
	if r.ICMP != nil && !isNamed(r.Protocol, "ICMP") && !isNamed(r.Protocol, "ICMPv6") {
		e.add(path+".icmp", "rules that specify ICMP fields must set protocol to ICMP or ICMPv6")
	}
	if (isNamed(r.Protocol, "ICMP") || isNamed(r.NotProtocol, "ICMP")) && r.IPVersion != nil && *r.IPVersion != 4 {
		e.add(path+".ipVersion", "must be 4 with protocol ICMP")
	}
	if (isNamed(r.Protocol, "ICMPv6") || isNamed(r.NotProtocol, "ICMPv6")) && r.IPVersion != nil && *r.IPVersion != 6 {
		e.add(path+".ipVersion", "must be 6 with protocol ICMPv6")
	}
	out.ICMP = icmp(path+".icmp", r.ICMP, e)
	out.NotICMP = icmp(path+".notICMP", r.NotICMP, e)

	// Ports need a protocol that has ports (Calico's SupportsPorts: TCP, UDP, SCTP).
	if r.Protocol == nil || !r.Protocol.SupportsPorts() {
		for _, p := range []struct {
			field string
			ports []numorstring.Port
		}{
			{"source.ports", r.Source.Ports}, {"source.notPorts", r.Source.NotPorts},
			{"destination.ports", r.Destination.Ports}, {"destination.notPorts", r.Destination.NotPorts},
		} {
			if len(p.ports) > 0 {
				e.add(path+"."+p.field, "rules that specify ports must set protocol to TCP, UDP or SCTP")
			}
		}
	}
	if r.Destination.Services != nil && len(r.Destination.Ports) > 0 {
		e.add(path+".destination.ports", "cannot specify ports with a service match")
	}
	if r.Destination.Services != nil && len(r.Destination.NotPorts) > 0 {
		e.add(path+".destination.notPorts", "cannot specify notPorts with a service match")
	}
	if r.HTTP != nil && r.Protocol != nil && !isNamed(r.Protocol, "TCP") {
		e.add(path+".protocol", "rules that specify HTTP fields must set protocol to TCP or leave it empty")
	}

	// Nets: all one family, agreeing with ipVersion, no catch-all in a negation.
	fam := &netFamily{ipVersion: r.IPVersion}
	out.Source = entityRule(path+".source", &r.Source, ns, fam, e)
	out.Destination = entityRule(path+".destination", &r.Destination, ns, fam, e)
	return out
}

// netFamily tracks the address families seen across one rule's nets.
type netFamily struct {
	ipVersion    *int
	seen4, seen6 bool
}

// entityRule converts a source or destination match.
func entityRule(path string, er *apiv3.EntityRule, ns string, fam *netFamily, e *errs) model.EntityRule {
	var out model.EntityRule
	out.Nets = nets(path+".nets", er.Nets, false, fam, e)
	out.NotNets = nets(path+".notNets", er.NotNets, true, fam, e)
	out.Ports = ports(path+".ports", er.Ports, e)
	out.NotPorts = ports(path+".notPorts", er.NotPorts, e)

	ok := true
	if er.Selector != "" {
		if strings.Contains(er.Selector, "global()") {
			e.add(path+".selector", "global() may only be used in a namespaceSelector")
			ok = false
		}
		ok = checkSelector(path+".selector", er.Selector, e) && ok
	}
	if er.NamespaceSelector != "" {
		ok = checkSelector(path+".namespaceSelector", er.NamespaceSelector, e) && ok
		if strings.Contains(er.NamespaceSelector, "global(") && strings.TrimSpace(er.NamespaceSelector) != "global()" {
			e.add(path+".namespaceSelector", "global() cannot be combined with other expressions")
			ok = false
		}
	}
	if er.NotSelector != "" {
		ok = checkSelector(path+".notSelector", er.NotSelector, e) && ok
	}
	if sa := er.ServiceAccounts; sa != nil {
		if sa.Selector != "" {
			ok = checkSelector(path+".serviceAccounts.selector", sa.Selector, e) && ok
		}
		// Calico drops the whole service-account match when a name cannot be quoted into a
		// selector (matching everything); felis rejects such names instead of failing open.
		for i, n := range sa.Names {
			if !nameRegex.MatchString(n) {
				e.add(idx(path+".serviceAccounts.names", i), "invalid service account name %q; expected a Kubernetes object name", n)
				ok = false
			}
		}
	}
	if s := er.Services; s != nil {
		if s.Name == "" {
			e.add(path+".services.name", "must specify a service name")
		}
		if er.NamespaceSelector != "" {
			e.add(path+".services", "cannot specify namespaceSelector and services on the same rule")
		}
		if er.Selector != "" || er.NotSelector != "" {
			e.add(path+".services", "cannot specify selector/notSelector and services on the same rule")
		}
		if er.ServiceAccounts != nil {
			e.add(path+".services", "cannot specify serviceAccounts and services on the same rule")
		}
		if len(er.Nets) > 0 || len(er.NotNets) > 0 {
			e.add(path+".services", "cannot specify nets/notNets and services on the same rule")
		}
		svcNS := s.Namespace
		if svcNS == "" {
			svcNS = ns // a namespaced policy's service match defaults to its own namespace
		}
		out.Services = &model.ServiceMatch{Name: s.Name, Namespace: svcNS}
	}
	if !ok {
		return out
	}
	saSel := ""
	if er.ServiceAccounts != nil {
		saSel = serviceAccountSelector(er.ServiceAccounts)
	}
	out.Selector = parsed(path, endpointSelector(er.NamespaceSelector, er.Selector, saSel, er.NotSelector, ns), e)
	if er.NotSelector != "" {
		// Calico leaves notSelector unscoped; the namespace scoping lives in Selector.
		out.NotSelector = parsed(path+".notSelector", er.NotSelector, e)
	}
	return out
}

// endpointSelector builds a rule's effective selector exactly as Calico's
// getEndpointSelector does: the namespace selector (pcns.-prefixed, all()/global() rewritten)
// or the policy's own namespace, ANDed with the service-account and endpoint selectors.
func endpointSelector(namespaceSelector, endpointSel, saSel, notSelector, ns string) string {
	var nsSel, sel string
	if namespaceSelector != "" {
		nsSel = prefixSelector(namespaceSelector, prefixNamespace)
		nsSel = strings.ReplaceAll(nsSel, "all()", "has("+labelNamespace+")")
		nsSel = strings.ReplaceAll(nsSel, "global()", "!has("+labelNamespace+")")
	} else if ns != "" {
		nsSel = fmt.Sprintf("%s == '%s'", labelNamespace, ns)
	}
	var parts []string
	if saSel != "" {
		parts = append(parts, saSel)
	}
	if endpointSel != "" {
		parts = append(parts, endpointSel)
	}
	switch len(parts) {
	case 1:
		sel = parts[0]
	case 2:
		sel = "(" + strings.Join(parts, ") && (") + ")"
	}
	if nsSel != "" && (sel != "" || notSelector != "" || namespaceSelector != "") {
		if sel != "" {
			sel = fmt.Sprintf("(%s) && (%s)", nsSel, sel)
		} else {
			sel = nsSel
		}
	}
	return sel
}

// serviceAccountSelector folds a serviceAccounts match into a selector as Calico's
// parseServiceAccounts does: pcsa.-prefixed selector AND serviceaccount name in {...}.
func serviceAccountSelector(sam *apiv3.ServiceAccountMatch) string {
	var updated string
	if sam.Selector != "" {
		updated = prefixSelector(sam.Selector, prefixSA)
	}
	if len(sam.Names) == 0 {
		return updated
	}
	expr := fmt.Sprintf("%s in { '%s' }", labelServiceAccount, strings.Join(sam.Names, "', '"))
	s, err := parser.Parse(expr)
	if err != nil {
		return "" // unreachable after validation; Calico returns "" here too
	}
	expr = s.String()
	if updated != "" {
		expr = fmt.Sprintf("(%s) && (%s)", updated, expr)
	}
	return expr
}

// prefixSelector adds prefix to every label in a selector (Calico's parseSelectorAttachPrefix).
func prefixSelector(s, prefix string) string {
	sel, err := parser.Parse(s)
	if err != nil {
		return ""
	}
	sel.AcceptVisitor(parser.PrefixVisitor{Prefix: prefix})
	return sel.String()
}

// prefixAndAppend ANDs a prefixed selector onto current (Calico's prefixAndAppendSelector).
func prefixAndAppend(current, add, prefix string) string {
	if add == "" {
		return current
	}
	p := prefixSelector(add, prefix)
	if p == "" {
		return current
	}
	if current == "" {
		return p
	}
	return fmt.Sprintf("(%s) && %s", current, p)
}

// checkSelector reports an unparsable selector.
func checkSelector(field, expr string, e *errs) bool {
	if _, err := selector.Parse(expr); err != nil {
		e.add(field, "invalid selector %q: %v", expr, err)
		return false
	}
	return true
}

// parsed parses an effective selector; "" means no constraint (nil).
func parsed(field, expr string, e *errs) *selector.Selector {
	if expr == "" {
		return nil
	}
	s, err := selector.Parse(expr)
	if err != nil {
		e.add(field, "invalid selector %q: %v", expr, err)
		return nil
	}
	return s
}

// protocol converts a v3 protocol to its number.
func protocol(field string, p *numorstring.Protocol, e *errs) *uint8 {
	if p == nil {
		return nil
	}
	if n, err := p.NumValue(); err == nil {
		if n == 0 {
			e.add(field, "protocol number invalid; expected 1-255")
			return nil
		}
		return &n
	}
	if n, ok := protocolNumbers[p.StrVal]; ok {
		return &n
	}
	e.add(field, "unknown protocol %q; expected TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255", p.StrVal)
	return nil
}

// icmp converts ICMP type/code (type 0-254, code 0-255, code only with type).
func icmp(field string, f *apiv3.ICMPFields, e *errs) *model.ICMPMatch {
	if f == nil {
		return nil
	}
	out := &model.ICMPMatch{}
	if f.Type != nil {
		if *f.Type < 0 || *f.Type > 254 {
			e.add(field+".type", "ICMP type %d out of range; expected 0-254", *f.Type)
		} else {
			t := uint8(*f.Type)
			out.Type = &t
		}
	}
	if f.Code != nil {
		if f.Type == nil {
			e.add(field+".code", "ICMP code specified without an ICMP type")
		}
		if *f.Code < 0 || *f.Code > 255 {
			e.add(field+".code", "ICMP code %d out of range; expected 0-255", *f.Code)
		} else {
			c := uint8(*f.Code)
			out.Code = &c
		}
	}
	return out
}

// ports validates a ports list: ranges 1-65535 with min <= max, or names.
func ports(field string, in []numorstring.Port, e *errs) []model.Port {
	if len(in) == 0 {
		return nil
	}
	out := make([]model.Port, 0, len(in))
	for i, p := range in {
		f := idx(field, i)
		switch {
		case p.PortName != "":
			if p.MinPort != 0 || p.MaxPort != 0 {
				e.add(f, "a named port cannot also have numbers")
				continue
			}
			out = append(out, model.Port{Name: p.PortName})
		case p.MinPort > p.MaxPort:
			e.add(f, "port range %d:%d invalid; expected min <= max", p.MinPort, p.MaxPort)
		case p.MinPort < 1:
			e.add(f, "port %s invalid; expected a number 1-65535, a range \"min:max\" or a name", p.String())
		default:
			out = append(out, model.Port{Min: p.MinPort, Max: p.MaxPort})
		}
	}
	return out
}

// nets parses CIDRs or bare IPs (Calico's ParseCIDROrIP), masked to their network.
func nets(field string, in []string, negated bool, fam *netFamily, e *errs) []netip.Prefix {
	if len(in) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(in))
	var v4, v6 bool
	for i, s := range in {
		p, err := parseCIDROrIP(s)
		if err != nil {
			e.add(idx(field, i), "invalid CIDR %q; expected an address or address/prefix-length", s)
			continue
		}
		v4 = v4 || p.Addr().Is4()
		v6 = v6 || p.Addr().Is6()
		if negated && p.Bits() == 0 {
			e.add(idx(field, i), "catch-all CIDR %s in a negation matches no traffic", s)
		}
		out = append(out, p)
	}
	if fam.ipVersion != nil && ((v4 && *fam.ipVersion != 4) || (v6 && *fam.ipVersion != 6)) {
		e.add(field, "rule IP version doesn't match CIDR version")
	}
	if v4 && fam.seen6 || v6 && fam.seen4 || v4 && v6 {
		e.add(field, "rule contains both IPv4 and IPv6 CIDRs")
	}
	fam.seen4 = fam.seen4 || v4
	fam.seen6 = fam.seen6 || v6
	return out
}

// parseCIDROrIP parses "a.b.c.d/n" (masked) or a bare address (/32 or /128).
func parseCIDROrIP(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("bad address %q", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		if p.Bits() < 0 {
			return netip.Prefix{}, fmt.Errorf("bad prefix %q", s)
		}
	}
	return p.Masked(), nil
}

// parseIP parses one address (no prefix).
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	}
	return a.Unmap(), nil
}
