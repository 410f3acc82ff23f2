package nftables

import (
	"context"
	"testing"

	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// mustRender renders a snapshot or fails the test.
func mustRender(t testing.TB, s snapshot.Snapshot) render.Table {
	t.Helper()
	tbl, err := render.Render(s)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

// withoutRules is what Observe can return for a desired table.
func withoutRules(t render.Table) string {
	c := t
	c.Chains = append([]render.Chain(nil), t.Chains...)
	for i := range c.Chains {
		c.Chains[i].Rules = nil
	}
	return c.String()
}

func observeString(t *testing.T, dp Dataplane) string {
	t.Helper()
	got, err := dp.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got == nil {
		return "<no table>"
	}
	return got.String()
}

func opStrings(ops []Op) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.String()
	}
	return out
}

func chainHash(t render.Table, name string) string {
	for _, c := range t.Chains {
		if c.Name == name {
			return c.Hash
		}
	}
	return ""
}
