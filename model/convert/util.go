package convert

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/felis-dev/felis/model"
)

// copyLabels copies a label map (nil stays nil).
func copyLabels(in map[string]string) model.Labels {
	if in == nil {
		return nil
	}
	out := make(model.Labels, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}

// checkLabels validates label keys and values as Kubernetes does.
func checkLabels(field string, labels map[string]string, e *errs) {
	for k, v := range labels {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			e.add(field+"."+k, "invalid label key: %s", strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			e.add(field+"."+k, "invalid label value %q: %s", v, strings.Join(msgs, "; "))
		}
	}
}

// itoa formats an int.
func itoa(n int) string { return strconv.Itoa(n) }

// parseMAC parses a MAC address and returns its canonical lower-case form.
func parseMAC(s string) (string, error) {
	m, err := net.ParseMAC(s)
	if err != nil {
		return "", err
	}
	return m.String(), nil
}

// parseAddrPrefix parses "address/len" keeping host bits, or a bare address as /32 or /128.
func parseAddrPrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := parseIP(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.ParsePrefix(s)
}

// netipParsePrefix parses a CIDR (address/len) strictly.
func netipParsePrefix(s string) (netip.Prefix, error) { return netip.ParsePrefix(s) }

// masked parses already-validated CIDRs and masks them (invalid ones are skipped).
func masked(in []string) []netip.Prefix {
	if len(in) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// requireNamespacedName reports a missing metadata.name or metadata.namespace.
func requireNamespacedName(e *errs, namespace, name string) {
	if name == "" {
		e.add("metadata.name", "missing name")
	}
	if namespace == "" {
		e.add("metadata.namespace", "missing namespace")
	}
}
