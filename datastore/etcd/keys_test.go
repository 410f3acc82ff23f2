package etcd

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

func TestDecodeKV(t *testing.T) {
	tier := `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"security"},"spec":{"order":100}}`
	netset := `{"apiVersion":"projectcalico.org/v3","kind":"NetworkSet","metadata":{"name":"ext","namespace":"prod"},"spec":{"nets":["192.0.2.0/24"]}}`
	tests := []struct {
		name    string
		key     string
		value   string
		keys    []model.Key // objects produced
		skipped bool
		errors  []string // "field: reason" prefixes
	}{
		{name: "cluster-scoped resource", key: ResourcePrefix + "tiers/security", value: tier,
			keys: []model.Key{{Kind: model.KindTier, Name: "security"}}},
		{name: "namespaced resource", key: ResourcePrefix + "networksets/prod/ext", value: netset,
			keys: []model.Key{{Kind: model.KindNetworkSet, Namespace: "prod", Name: "ext"}}},
		{name: "IPAM block", key: BlockPrefix + "ipv4/block/10.65.1.0-26", value: `{"cidr":"10.65.1.0/26","affinity":"host:n1"}`,
			keys: []model.Key{{Kind: model.KindIPAMBlock, Name: "10-65-1-0-26"}}},
		{name: "kind felis does not use", key: ResourcePrefix + "bgppeers/p1", value: `{}`, skipped: true},
		{name: "outside the layout", key: "/calico/felix/v2/no-region/host/n1/status", value: `{}`, skipped: true},
		{name: "other IPAM keys", key: BlockPrefix + "ipv4/handle/h1", value: `{}`, skipped: true},
		{name: "namespaced kind without namespace", key: ResourcePrefix + "networksets/ext", value: netset, skipped: true},
		{name: "name differs from key", key: ResourcePrefix + "tiers/other", value: tier,
			errors: []string{`metadata.name: is "security" but the key says "other"`}},
		{name: "namespace differs from key", key: ResourcePrefix + "networksets/dev/ext", value: netset,
			errors: []string{`metadata.namespace: is "prod" but the key says "dev"`}},
		{name: "invalid resource", key: ResourcePrefix + "tiers/security", value: `{"apiVersion":"projectcalico.org/v3","kind":"Tier","metadata":{"name":"security"},"spec":{"defaultAction":"Maybe"}}`,
			errors: []string{"spec.defaultAction: "}},
		{name: "block that is not JSON", key: BlockPrefix + "ipv4/block/10.65.1.0-26", value: `{`,
			errors: []string{"not valid JSON"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := decodeKV(tc.key, []byte(tc.value))
			if r.Skipped != tc.skipped {
				t.Fatalf("Skipped = %v, want %v (result %+v)", r.Skipped, tc.skipped, r)
			}
			var keys []model.Key
			for _, o := range r.Objects {
				keys = append(keys, o.GetMeta().Key)
			}
			if d := cmp.Diff(tc.keys, keys); d != "" {
				t.Errorf("objects (-want +got):\n%s", d)
			}
			if len(r.Errors) != len(tc.errors) {
				t.Fatalf("errors: got %q, want %d starting %q", r.Errors, len(tc.errors), tc.errors)
			}
			for i, e := range r.Errors {
				if got := e.Error(); len(got) < len(tc.errors[i]) || got[:len(tc.errors[i])] != tc.errors[i] {
					t.Errorf("error %d: got %q, want prefix %q", i, got, tc.errors[i])
				}
			}
		})
	}
}
