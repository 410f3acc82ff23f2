package derive

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
	"github.com/felis-dev/felis/snapshot"
)

// ipSetKind says what defines an IP set.
type ipSetKind int

const (
	setSelector  ipSetKind = iota // addresses of everything the selector matches
	setNamedPort                  // (address, protocol, port) of a named port on what the selector matches
	setService                    // a Kubernetes service's endpoint addresses, with or without ports
)

// ipSetDef is the definition of one IP set a rule references; its members are computed
// separately (see ipSetMembers), so a definition is a pure function of the rule alone.
type ipSetDef struct {
	ID       string
	Kind     ipSetKind
	Selector *selector.Selector // setSelector, setNamedPort
	PortName string             // setNamedPort
	Protocol uint8              // setNamedPort: 6, 17 or 132
	Service  string             // setService: "NAMESPACE/NAME"
	Ports    bool               // setService: members carry protocol and port
}

// uniqueID is Calico's content ID for a derived object: prefix ":" base64url(SHA-224(prefix ":" content)).
func uniqueID(prefix, content string) string {
	sum := sha256.Sum224([]byte(prefix + ":" + content))
	return prefix + ":" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// protoName is the lower-case name Felix uses for a named-port protocol inside IP set IDs.
func protoName(p uint8) string {
	switch p {
	case model.ProtoUDP:
		return "udp"
	case model.ProtoSCTP:
		return "sctp"
	}
	return "tcp"
}

func selectorSet(sel *selector.Selector) ipSetDef {
	return ipSetDef{ID: sel.UniqueID(), Kind: setSelector, Selector: sel}
}

// namedPortSet matches Felix's named-port IP set: its ID hashes the selector's ID, the
// protocol name and the port name.
func namedPortSet(sel *selector.Selector, name string, proto uint8) ipSetDef {
	return ipSetDef{
		ID:   uniqueID("n", sel.UniqueID()+","+protoName(proto)+","+name),
		Kind: setNamedPort, Selector: sel, PortName: name, Protocol: proto,
	}
}

// serviceSet matches Felix's service IP sets ("svc" with ports for destination matches,
// "svcnoport" for source matches).
func serviceSet(svc string, ports bool) ipSetDef {
	prefix := "svcnoport"
	if ports {
		prefix = "svc"
	}
	return ipSetDef{ID: uniqueID(prefix, svc), Kind: setService, Service: svc, Ports: ports}
}

// source describes the IP set for humans (the IPSet.Source field).
func (d ipSetDef) source() string {
	switch d.Kind {
	case setNamedPort:
		return fmt.Sprintf("port %s/%s of %s", d.PortName, protoName(d.Protocol), d.Selector.String())
	case setService:
		if d.Ports {
			return "service " + d.Service + " endpoints with ports"
		}
		return "service " + d.Service + " endpoints"
	}
	return d.Selector.String()
}

// setType is the IP set's member type.
func (d ipSetDef) setType() snapshot.IPSetType {
	if d.Kind == setNamedPort || (d.Kind == setService && d.Ports) {
		return snapshot.IPSetIPPort
	}
	return snapshot.IPSetNet
}

// allSelector is what a named-port set filters on when its side has no positive selector.
var allSelector = selector.MustParse("all()")

// ruleContext names the rule being converted, for origins and error messages.
type ruleContext struct {
	Kind      model.Kind
	Namespace string
	Name      string
	Direction string // ingress | egress
	Index     int
}

func (c ruleContext) origin() snapshot.RuleOrigin {
	return snapshot.RuleOrigin{Kind: string(c.Kind), Namespace: c.Namespace, Name: c.Name, Direction: c.Direction, Index: c.Index}
}

func (c ruleContext) where(field string) string {
	key := model.Key{Kind: c.Kind, Namespace: c.Namespace, Name: c.Name}
	return fmt.Sprintf("%s: spec.%s[%d].%s", key, c.Direction, c.Index, field)
}

// convertRule turns one rule into the IR plus the IP sets it references. keep is false when
// the rule can match no packet of either IP family (Felix renders nothing for it, but still
// programs its IP sets). Pure.
func convertRule(r *model.Rule, c ruleContext) (ir snapshot.Rule, keep bool, sets []ipSetDef, err error) {
	// Felix renders a rule per IP family and skips it for a family when its ipVersion is the
	// other one, when a nets/notNets list has entries but none of that family, or when a
	// notNets list holds that family's catch-all. The IR records the families that remain.
	v4, v6 := familyApplies(r, 4), familyApplies(r, 6)
	ir = snapshot.Rule{
		Action:      snapshot.Action(r.Action),
		IPVersion:   r.IPVersion,
		Protocol:    copyPtr(r.Protocol),
		NotProtocol: copyPtr(r.NotProtocol),
		ICMP:        icmpMatch(r.ICMP),
		NotICMP:     icmpMatch(r.NotICMP),
		Origin:      c.origin(),
	}
	fam := 0
	switch {
	case v4 && !v6:
		fam, ir.IPVersion = 4, 4
	case v6 && !v4:
		fam, ir.IPVersion = 6, 6
	}
	ir.SrcNets = familyNets(r.Source.Nets, fam)
	ir.NotSrcNets = familyNets(r.Source.NotNets, fam)
	ir.DstNets = familyNets(r.Destination.Nets, fam)
	ir.NotDstNets = familyNets(r.Destination.NotNets, fam)

	// Named ports on endpoints carry a protocol; a rule's named port takes the rule's protocol
	// (UDP or SCTP when it says so, TCP otherwise), as Felix does.
	npProto := model.ProtoTCP
	if r.Protocol != nil && (*r.Protocol == model.ProtoUDP || *r.Protocol == model.ProtoSCTP) {
		npProto = *r.Protocol
	}

	side := func(e *model.EntityRule, field string) (pos []ipSetDef, neg []ipSetDef, nums, notNums []snapshot.PortRange, named, notNamed []ipSetDef, err error) {
		// With a positive selector, Felix folds the negated selector into it ("(pos) &&
		// (!(neg))") so one set suffices; without one, the negated selector gets its own set.
		posSel, negSel := e.Selector, e.NotSelector
		if posSel != nil && negSel != nil {
			combined := fmt.Sprintf("(%s) && (!(%s))", posSel.String(), negSel.String())
			posSel, err = selector.Parse(combined)
			if err != nil {
				return nil, nil, nil, nil, nil, nil, fmt.Errorf("%s: combining selector and notSelector: %w", c.where(field), err)
			}
			negSel = nil
		}
		var namedPorts, notNamedPorts []string
		nums, namedPorts = splitPorts(e.Ports)
		notNums, notNamedPorts = splitPorts(e.NotPorts)
		// Named-port sets are filtered by the positive selector (or all()), for negated named
		// ports too: the rule only matches inside the positive selector anyway.
		npSel := posSel
		if npSel == nil {
			npSel = allSelector
		}
		for _, n := range namedPorts {
			named = append(named, namedPortSet(npSel, n, npProto))
		}
		for _, n := range notNamedPorts {
			notNamed = append(notNamed, namedPortSet(npSel, n, npProto))
		}
		// The selector set is redundant when named ports already filter by it and there are
		// no numeric ports to OR with; Felix then omits it.
		if posSel != nil && (len(nums) > 0 || len(namedPorts) == 0) {
			pos = append(pos, selectorSet(posSel))
		}
		if negSel != nil {
			neg = append(neg, selectorSet(negSel))
		}
		return pos, neg, nums, notNums, named, notNamed, nil
	}

	srcPos, srcNeg, srcNums, notSrcNums, srcNamed, notSrcNamed, err := side(&r.Source, "source")
	if err != nil {
		return snapshot.Rule{}, false, nil, err
	}
	dstPos, dstNeg, dstNums, notDstNums, dstNamed, notDstNamed, err := side(&r.Destination, "destination")
	if err != nil {
		return snapshot.Rule{}, false, nil, err
	}
	// services: a destination service matches its endpoints' (address, port) pairs; a source
	// service matches its endpoints' addresses.
	if s := r.Destination.Services; s != nil {
		dstSvc := serviceSet(s.Namespace+"/"+s.Name, true)
		ir.DstServiceIPSets = append(ir.DstServiceIPSets, dstSvc.ID)
		sets = append(sets, dstSvc)
	}
	if s := r.Source.Services; s != nil {
		srcPos = append(srcPos, serviceSet(s.Namespace+"/"+s.Name, false))
	}

	ir.SrcPorts, ir.NotSrcPorts, ir.DstPorts, ir.NotDstPorts = srcNums, notSrcNums, dstNums, notDstNums
	ir.SrcIPSets, ir.NotSrcIPSets = ids(srcPos), ids(srcNeg)
	ir.DstIPSets, ir.NotDstIPSets = ids(dstPos), ids(dstNeg)
	ir.SrcNamedPortIPSets, ir.NotSrcNamedPortIPSets = ids(srcNamed), ids(notSrcNamed)
	ir.DstNamedPortIPSets, ir.NotDstNamedPortIPSets = ids(dstNamed), ids(notDstNamed)
	for _, l := range [][]ipSetDef{srcPos, srcNeg, dstPos, dstNeg, srcNamed, notSrcNamed, dstNamed, notDstNamed} {
		sets = append(sets, l...)
	}
	// A rule no family renders still has its IP sets: Felix's rule scanner activates them
	// before the renderer drops the rule.
	if !v4 && !v6 {
		return snapshot.Rule{}, false, sets, nil
	}
	return ir, true, sets, nil
}

// familyApplies reports whether Felix renders the rule for IP family fam (4 or 6).
func familyApplies(r *model.Rule, fam int) bool {
	if r.IPVersion != 0 && r.IPVersion != fam {
		return false
	}
	return netsApply(r.Source.Nets, fam, false) && netsApply(r.Source.NotNets, fam, true) &&
		netsApply(r.Destination.Nets, fam, false) && netsApply(r.Destination.NotNets, fam, true)
}

// netsApply is false when a non-empty nets list has nothing of family fam, or when a negated
// list contains fam's catch-all (Felix drops such a rule rather than render a contradiction).
func netsApply(nets []netip.Prefix, fam int, negated bool) bool {
	if len(nets) == 0 {
		return true
	}
	found := false
	for _, n := range nets {
		if family(n.Addr()) != fam {
			continue
		}
		if negated && n.Bits() == 0 {
			return false
		}
		found = true
	}
	return found
}

func family(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return 4
	}
	return 6
}

// familyNets keeps the nets of family fam (all of them when fam is 0), masked.
func familyNets(nets []netip.Prefix, fam int) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range nets {
		if fam == 0 || family(n.Addr()) == fam {
			out = append(out, n.Masked())
		}
	}
	return out
}

func splitPorts(ports []model.Port) (nums []snapshot.PortRange, named []string) {
	for _, p := range ports {
		if p.Name != "" {
			named = append(named, p.Name)
			continue
		}
		nums = append(nums, snapshot.PortRange{Min: p.Min, Max: p.Max})
	}
	return nums, named
}

func ids(defs []ipSetDef) []string {
	var out []string
	for _, d := range defs {
		out = append(out, d.ID)
	}
	return out
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func icmpMatch(m *model.ICMPMatch) *snapshot.ICMPMatch {
	if m == nil || m.Type == nil {
		return nil
	}
	return &snapshot.ICMPMatch{Type: *m.Type, Code: copyPtr(m.Code)}
}

// convertRules converts one direction's rules; dropped rules keep their neighbours' indices.
func convertRules(rules []model.Rule, c ruleContext) ([]snapshot.Rule, []ipSetDef, error) {
	var out []snapshot.Rule
	var sets []ipSetDef
	for i := range rules {
		c.Index = i
		ir, keep, s, err := convertRule(&rules[i], c)
		if err != nil {
			return nil, nil, err
		}
		if keep {
			out = append(out, ir)
		}
		sets = append(sets, s...)
	}
	return out, sets, nil
}

// policyIR converts an active policy into its snapshot form and the IP sets its rules
// reference. It depends on the policy object alone, so it can be memoized on its revision.
func policyIR(p *model.Policy) (snapshot.Policy, []ipSetDef, error) {
	c := ruleContext{Kind: p.Key.Kind, Namespace: p.Key.Namespace, Name: p.Key.Name}
	c.Direction = "ingress"
	in, inSets, err := convertRules(p.Ingress, c)
	if err != nil {
		return snapshot.Policy{}, nil, err
	}
	c.Direction = "egress"
	out, outSets, err := convertRules(p.Egress, c)
	if err != nil {
		return snapshot.Policy{}, nil, err
	}
	return snapshot.Policy{
		ID:             p.Key.ID(),
		Kind:           string(p.Key.Kind),
		Namespace:      p.Key.Namespace,
		Name:           p.Key.Name,
		Tier:           tierName(p),
		Order:          copyPtr(p.Order),
		Selector:       policySelector(p).String(),
		Inbound:        in,
		Outbound:       out,
		DoNotTrack:     p.DoNotTrack,
		PreDNAT:        p.PreDNAT,
		ApplyOnForward: p.ApplyOnForward,
	}, append(inSets, outSets...), nil
}

// profileIR converts an active profile; a nil profile is one that endpoints list but that
// does not exist, which Felix replaces with a profile denying everything in both directions.
func profileIR(name string, p *model.Profile) (snapshot.Profile, []ipSetDef, error) {
	if p == nil {
		deny := func(dir string) []snapshot.Rule {
			return []snapshot.Rule{{Action: snapshot.Deny, Origin: snapshot.RuleOrigin{Kind: string(model.KindProfile), Name: name, Direction: dir}}}
		}
		return snapshot.Profile{ID: name, Inbound: deny("ingress"), Outbound: deny("egress"), Missing: true}, nil, nil
	}
	c := ruleContext{Kind: model.KindProfile, Name: p.Key.Name}
	c.Direction = "ingress"
	in, inSets, err := convertRules(p.Ingress, c)
	if err != nil {
		return snapshot.Profile{}, nil, err
	}
	c.Direction = "egress"
	out, outSets, err := convertRules(p.Egress, c)
	if err != nil {
		return snapshot.Profile{}, nil, err
	}
	return snapshot.Profile{ID: name, Inbound: in, Outbound: out}, append(inSets, outSets...), nil
}

// policySelector is the policy's endpoint selector; a missing one selects everything.
func policySelector(p *model.Policy) *selector.Selector {
	if p.Selector == nil {
		return allSelector
	}
	return p.Selector
}

// tierName is the policy's tier; Calico puts tierless policies in "default".
func tierName(p *model.Policy) string {
	if p.Tier == "" {
		return "default"
	}
	return p.Tier
}
