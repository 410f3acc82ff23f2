package convert

import (
	"fmt"
	"regexp"
	"strings"

	apiv3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
)

// Name formats Calico's validator enforces.
const (
	nameLabelFmt     = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
	nameSubdomainFmt = nameLabelFmt + "(\\." + nameLabelFmt + ")*"
)

var (
	nameRegex          = regexp.MustCompile("^" + nameSubdomainFmt + "$")
	tierNameRegex      = regexp.MustCompile("^" + nameLabelFmt + "$")
	networkPolicyName  = regexp.MustCompile("^((" + nameLabelFmt + ")(\\." + nameLabelFmt + ")?|((?:knp|ossg)\\.default\\.(" + nameSubdomainFmt + ")))$")
	globalPolicyName   = regexp.MustCompile("^(" + nameLabelFmt + "\\.)?" + nameLabelFmt + "$")
	defaultTier        = "default"
	k8sPolicyPrefix    = "knp.default."
	defaultTierOrder   = apiv3.DefaultTierOrder
	policyNameMaxBytes = 253
)

// checkName validates metadata.name against a format; it also checks metadata.namespace
// when namespaced is set.
func checkName(meta *metav1.ObjectMeta, re *regexp.Regexp, maxLen int, namespaced bool, e *errs) {
	switch {
	case meta.Name == "":
		e.add("metadata.name", "missing name")
	case len(meta.Name) > maxLen:
		e.add("metadata.name", "name is too long by %d bytes", len(meta.Name)-maxLen)
	case !re.MatchString(meta.Name):
		e.add("metadata.name", "invalid name %q; expected lower case alphanumerics, '-' and '.' (regex %s)", meta.Name, re.String())
	}
	if namespaced {
		switch {
		case meta.Namespace == "":
			e.add("metadata.namespace", "missing namespace")
		case !tierNameRegex.MatchString(meta.Namespace):
			e.add("metadata.namespace", "invalid namespace %q; expected a DNS label", meta.Namespace)
		}
	}
}

// policyTier validates spec.tier against the name, as Calico v3.31's client does
// (ValidateTieredPolicyName): a dotted name must start with "TIER."; an undotted name is only
// valid in tier default. It returns the tier and the name felis stores the policy under: the
// name as calicoctl shows it (a "default." prefix removed, as ClientTieredPolicyName does).
func policyTier(name, tier string, e *errs) (string, string) {
	if tier == "" {
		tier = defaultTier
	} else if !tierNameRegex.MatchString(tier) {
		e.add("spec.tier", "invalid tier name %q; expected a DNS label", tier)
	}
	if strings.HasPrefix(name, k8sPolicyPrefix) || strings.HasPrefix(name, "ossg.") {
		return tier, name
	}
	before, after, dotted := strings.Cut(name, ".")
	switch {
	case !dotted && tier != defaultTier:
		e.add("metadata.name", "a policy in tier %q must be named %q (tier name, a dot, then the policy name)", tier, tier+"."+name)
	case dotted && before != tier:
		e.add("metadata.name", "policy name %q does not start with its tier %q followed by a dot", name, tier)
	case dotted && tier == defaultTier:
		return tier, after
	}
	return tier, name
}

// policyTypes validates spec.types and defaults them as Calico's client does: from the rules
// present (egress only if there are egress rules and no ingress rules; both if both).
func policyTypes(types []apiv3.PolicyType, ingress, egress int, e *errs) []model.PolicyType {
	if len(types) == 0 {
		switch {
		case egress == 0:
			return []model.PolicyType{model.PolicyTypeIngress}
		case ingress == 0:
			return []model.PolicyType{model.PolicyTypeEgress}
		default:
			return []model.PolicyType{model.PolicyTypeIngress, model.PolicyTypeEgress}
		}
	}
	seen := map[apiv3.PolicyType]bool{}
	out := make([]model.PolicyType, 0, len(types))
	for i, t := range types {
		switch t {
		case apiv3.PolicyTypeIngress, apiv3.PolicyTypeEgress:
		default:
			e.add(idx("spec.types", i), "unknown policy type %q; expected Ingress or Egress", t)
			continue
		}
		if seen[t] {
			e.add(idx("spec.types", i), "%q specified more than once", t)
			continue
		}
		seen[t] = true
		out = append(out, model.PolicyType(t))
	}
	return out
}

// performanceHints validates spec.performanceHints (only AssumeNeededOnEveryNode, unique).
func performanceHints(hints []apiv3.PolicyPerformanceHint, e *errs) []string {
	var out []string
	seen := map[apiv3.PolicyPerformanceHint]bool{}
	for i, h := range hints {
		if h != apiv3.PerfHintAssumeNeededOnEveryNode {
			e.add(idx("spec.performanceHints", i), "unknown hint %q; expected AssumeNeededOnEveryNode", h)
			continue
		}
		if seen[h] {
			e.add(idx("spec.performanceHints", i), "hint %q given twice", h)
			continue
		}
		seen[h] = true
		out = append(out, string(h))
	}
	return out
}

// checkPolicySelector validates a policy-level selector (global() is not allowed there).
func checkPolicySelector(field, expr string, e *errs) bool {
	if expr == "" {
		return true
	}
	if strings.Contains(expr, "global()") {
		e.add(field, "global() may only be used in a rule's namespaceSelector")
		return false
	}
	return checkSelector(field, expr, e)
}

// checkRuleServices applies Calico's direction rules for `services` matches.
func checkRuleServices(ingress, egress []apiv3.Rule, global bool, e *errs) {
	for i, r := range ingress {
		if r.Destination.Services != nil {
			e.add(idx("spec.ingress", i)+".destination.services", "not allowed in an ingress rule's destination")
		}
		if global && r.Source.Services != nil && r.Source.Services.Namespace == "" {
			e.add(idx("spec.ingress", i)+".source.services.namespace", "must specify a namespace in a global policy")
		}
	}
	for i, r := range egress {
		if r.Source.Services != nil {
			e.add(idx("spec.egress", i)+".source.services", "not allowed in an egress rule's source")
		}
		if r.HTTP != nil {
			e.add(idx("spec.egress", i)+".http", "not allowed in egress rules")
		}
		if global && r.Destination.Services != nil && r.Destination.Services.Namespace == "" {
			e.add(idx("spec.egress", i)+".destination.services.namespace", "must specify a namespace in a global policy")
		}
	}
}

// decodeGlobalNetworkPolicy decodes a projectcalico.org/v3 GlobalNetworkPolicy.
func decodeGlobalNetworkPolicy(data []byte) Result {
	var p apiv3.GlobalNetworkPolicy
	unknown, fatal := decodeCalico(data, &p)
	if fatal != nil {
		return Result{Resource: resourceName("GlobalNetworkPolicy", data), Errors: fatal}
	}
	return withErrors(GlobalNetworkPolicy(&p), unknown)
}

// GlobalNetworkPolicy converts a Calico GlobalNetworkPolicy.
func GlobalNetworkPolicy(p *apiv3.GlobalNetworkPolicy) Result {
	var e errs
	res := resourceText("GlobalNetworkPolicy", "", p.Name)
	checkName(&p.ObjectMeta, globalPolicyName, policyNameMaxBytes, false, &e)
	if p.Namespace != "" {
		e.add("metadata.namespace", "GlobalNetworkPolicy is cluster-scoped; remove the namespace")
	}
	s := &p.Spec
	tier, name := policyTier(p.Name, s.Tier, &e)
	if s.DoNotTrack && s.PreDNAT {
		e.add("spec.preDNAT", "preDNAT and doNotTrack cannot both be true")
	}
	if s.PreDNAT && len(s.Egress) > 0 {
		e.add("spec.egress", "a preDNAT policy cannot have egress rules")
	}
	if s.PreDNAT {
		for i, t := range s.Types {
			if t == apiv3.PolicyTypeEgress {
				e.add(idx("spec.types", i), "a preDNAT policy cannot have type Egress")
			}
		}
	}
	if !s.ApplyOnForward && (s.DoNotTrack || s.PreDNAT) {
		e.add("spec.applyOnForward", "must be true when preDNAT or doNotTrack is true")
	}
	okSel := checkPolicySelector("spec.selector", s.Selector, &e)
	okSel = checkPolicySelector("spec.namespaceSelector", s.NamespaceSelector, &e) && okSel
	okSel = checkPolicySelector("spec.serviceAccountSelector", s.ServiceAccountSelector, &e) && okSel
	checkRuleServices(s.Ingress, s.Egress, true, &e)

	out := &model.Policy{
		Meta:             key(model.KindGlobalNetworkPolicy, "", name),
		Tier:             tier,
		Order:            s.Order,
		Types:            policyTypes(s.Types, len(s.Ingress), len(s.Egress), &e),
		Ingress:          convertRules("spec.ingress", s.Ingress, "", &e),
		Egress:           convertRules("spec.egress", s.Egress, "", &e),
		DoNotTrack:       s.DoNotTrack,
		PreDNAT:          s.PreDNAT,
		ApplyOnForward:   s.ApplyOnForward,
		PerformanceHints: performanceHints(s.PerformanceHints, &e),
	}
	if okSel {
		// Calico's GNP update processor: namespaceSelector (pcns.) and serviceAccountSelector
		// (pcsa.) ANDed onto the selector, with all() meaning "has the namespace/SA label".
		sel := s.Selector
		if s.NamespaceSelector != "" {
			sel = prefixAndAppend(sel, s.NamespaceSelector, prefixNamespace)
			sel = strings.ReplaceAll(sel, "all()", "has("+labelNamespace+")")
		}
		if s.ServiceAccountSelector != "" {
			sel = prefixAndAppend(sel, s.ServiceAccountSelector, prefixSA)
			sel = strings.ReplaceAll(sel, "all()", "has("+labelServiceAccount+")")
		}
		out.Selector = policySelector(sel, &e)
	}
	return e.result(res, out)
}

// policySelector parses an effective policy selector; empty selects everything.
func policySelector(expr string, e *errs) *selector.Selector {
	if expr == "" {
		expr = "all()"
	}
	return parsed("spec.selector", expr, e)
}

// decodeNetworkPolicy decodes a projectcalico.org/v3 NetworkPolicy.
func decodeNetworkPolicy(data []byte) Result {
	var p apiv3.NetworkPolicy
	unknown, fatal := decodeCalico(data, &p)
	if fatal != nil {
		return Result{Resource: resourceName("NetworkPolicy", data), Errors: fatal}
	}
	return withErrors(NetworkPolicy(&p), unknown)
}

// NetworkPolicy converts a Calico (namespaced) NetworkPolicy.
func NetworkPolicy(p *apiv3.NetworkPolicy) Result {
	var e errs
	res := resourceText("NetworkPolicy", p.Namespace, p.Name)
	checkName(&p.ObjectMeta, networkPolicyName, policyNameMaxBytes, true, &e)
	s := &p.Spec
	tier, name := policyTier(p.Name, s.Tier, &e)
	okSel := checkPolicySelector("spec.selector", s.Selector, &e)
	okSel = checkPolicySelector("spec.serviceAccountSelector", s.ServiceAccountSelector, &e) && okSel
	checkRuleServices(s.Ingress, s.Egress, false, &e)
	out := &model.Policy{
		Meta:             key(model.KindNetworkPolicy, p.Namespace, name),
		Tier:             tier,
		Order:            s.Order,
		Types:            policyTypes(s.Types, len(s.Ingress), len(s.Egress), &e),
		Ingress:          convertRules("spec.ingress", s.Ingress, p.Namespace, &e),
		Egress:           convertRules("spec.egress", s.Egress, p.Namespace, &e),
		PerformanceHints: performanceHints(s.PerformanceHints, &e),
	}
	if okSel && p.Namespace != "" {
		out.Selector = policySelector(namespacedPolicySelector(s.Selector, s.ServiceAccountSelector, p.Namespace), &e)
	}
	return e.result(res, out)
}

// namespacedPolicySelector scopes a namespaced policy's selector as Calico's NetworkPolicy
// update processor does: (selector) && namespace == 'NS', then the pcsa.-prefixed
// serviceAccountSelector ANDed on.
func namespacedPolicySelector(sel, saSel, ns string) string {
	nsSel := fmt.Sprintf("%s == '%s'", labelNamespace, ns)
	if sel == "" {
		sel = nsSel
	} else {
		sel = fmt.Sprintf("(%s) && %s", sel, nsSel)
	}
	return prefixAndAppend(sel, saSel, prefixSA)
}

// decodeTier decodes a projectcalico.org/v3 Tier.
func decodeTier(data []byte) Result {
	var t apiv3.Tier
	unknown, fatal := decodeCalico(data, &t)
	if fatal != nil {
		return Result{Resource: resourceName("Tier", data), Errors: fatal}
	}
	return withErrors(Tier(&t), unknown)
}

// Tier converts a Calico Tier. Its default action is Deny unless Pass (Calico's tier
// update processor); the default tier's order must be Calico's fixed default.
func Tier(t *apiv3.Tier) Result {
	var e errs
	res := resourceText("Tier", "", t.Name)
	checkName(&t.ObjectMeta, tierNameRegex, 63, false, &e)
	if t.Name == defaultTier && (t.Spec.Order == nil || *t.Spec.Order != defaultTierOrder) {
		e.add("spec.order", "the default tier's order must be %v", defaultTierOrder)
	}
	action := model.ActionDeny
	if da := t.Spec.DefaultAction; da != nil {
		switch *da {
		case apiv3.Pass:
			action = model.ActionPass
		case apiv3.Deny:
		default:
			e.add("spec.defaultAction", "invalid default action %q; expected Deny or Pass", *da)
		}
	}
	return e.result(res, &model.Tier{Meta: key(model.KindTier, "", t.Name), Order: t.Spec.Order, DefaultAction: action})
}

// decodeProfile decodes a projectcalico.org/v3 Profile.
func decodeProfile(data []byte) Result {
	var p apiv3.Profile
	unknown, fatal := decodeCalico(data, &p)
	if fatal != nil {
		return Result{Resource: resourceName("Profile", data), Errors: fatal}
	}
	return withErrors(Profile(&p), unknown)
}

// Profile converts a Calico Profile (rules converted with no namespace, as Calico's profile
// processor does).
func Profile(p *apiv3.Profile) Result {
	var e errs
	res := resourceText("Profile", "", p.Name)
	checkName(&p.ObjectMeta, nameRegex, 253, false, &e)
	checkLabels("spec.labelsToApply", p.Spec.LabelsToApply, &e)
	out := &model.Profile{
		Meta:          key(model.KindProfile, "", p.Name),
		LabelsToApply: copyLabels(p.Spec.LabelsToApply),
		Ingress:       convertRules("spec.ingress", p.Spec.Ingress, "", &e),
		Egress:        convertRules("spec.egress", p.Spec.Egress, "", &e),
	}
	return e.result(res, out)
}
