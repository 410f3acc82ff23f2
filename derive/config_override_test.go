package derive_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

func TestResolveConfigOverrides(t *testing.T) {
	global := cfgFelix("default", map[string]any{"vxlanPort": 4790, "logPrefix": "global"})
	node := cfgFelix("node.n1", map[string]any{"vxlanPort": 4791, "chainInsertMode": "Append"})
	tests := []struct {
		name      string
		overrides []derive.ConfigOverride
		want      snapshot.Config
		wantErrs  []string
	}{{
		name: "no overrides: node over global",
		want: with(func(c *snapshot.Config) { c.VXLANPort = 4791; c.ChainInsertMode = "append"; c.LogPrefix = "global" }),
	}, {
		name:      "file over node",
		overrides: []derive.ConfigOverride{{Name: "file", Spec: map[string]any{"vxlanPort": 5000}}},
		want:      with(func(c *snapshot.Config) { c.VXLANPort = 5000; c.ChainInsertMode = "append"; c.LogPrefix = "global" }),
	}, {
		name: "environment over file",
		overrides: []derive.ConfigOverride{
			{Name: "file", Spec: map[string]any{"vxlanPort": 5000, "logPrefix": "file"}},
			{Name: "environment", Spec: map[string]any{"vxlanPort": 6000}},
		},
		want: with(func(c *snapshot.Config) { c.VXLANPort = 6000; c.ChainInsertMode = "append"; c.LogPrefix = "file" }),
	}, {
		name: "invalid override skipped, the layer below stays",
		overrides: []derive.ConfigOverride{
			{Name: "file", Spec: map[string]any{"vxlanPort": 5000}},
			{Name: "environment", Spec: map[string]any{"vxlanPort": 70000}},
		},
		want:     with(func(c *snapshot.Config) { c.VXLANPort = 5000; c.ChainInsertMode = "append"; c.LogPrefix = "global" }),
		wantErrs: []string{"environment: vxlanPort: 70000: want an integer from 1 to 65535; ignored"},
	}, {
		name:      "vxlanEnabled override beats pools",
		overrides: []derive.ConfigOverride{{Name: "environment", Spec: map[string]any{"vxlanEnabled": true}}},
		want: with(func(c *snapshot.Config) {
			c.VXLANPort = 4791
			c.ChainInsertMode = "append"
			c.LogPrefix = "global"
			c.VXLANEnabled = true
		}),
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := rtView(t, global, node)
			got, errs := derive.ResolveConfigOptions(v, "n1", derive.Options{ConfigOverrides: tc.overrides})
			if d := cmp.Diff(tc.want, got, cfgCmp...); d != "" {
				t.Errorf("config (-want +got):\n%s", d)
			}
			var gotErrs []string
			for _, e := range errs {
				gotErrs = append(gotErrs, e.Error())
			}
			if d := cmp.Diff(tc.wantErrs, gotErrs); d != "" {
				t.Errorf("errors (-want +got):\n%s", d)
			}
			// Derive and a Deriver lay the same overrides over the snapshot's config.
			snap, err := derive.Derive(v, "n1", derive.Options{ConfigOverrides: tc.overrides})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, snap.Config, cfgCmp...); d != "" {
				t.Errorf("Derive config (-want +got):\n%s", d)
			}
		})
	}
}

func TestDeriverConfigOverrides(t *testing.T) {
	st := store.New()
	cfgWrite(t, st, cfgFelix("node.n1", map[string]any{"vxlanPort": 4791}))
	d := derive.NewDeriver(st, "n1", derive.Options{ConfigOverrides: []derive.ConfigOverride{{Name: "environment", Spec: map[string]any{"logPrefix": "env"}}}})
	defer d.Close()
	snap, err := d.Derive(st.View())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Config.VXLANPort != 4791 || snap.Config.LogPrefix != "env" {
		t.Fatalf("config %+v: want vxlanPort 4791 from node.n1 and logPrefix env from the override", snap.Config)
	}
	// A datastore change to a key the override does not set flows through on the next cycle.
	cfgWrite(t, st, cfgFelix("node.n1", map[string]any{"vxlanPort": 4792, "logPrefix": "node"}))
	snap, err = d.Derive(st.View())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Config.VXLANPort != 4792 || snap.Config.LogPrefix != "env" {
		t.Fatalf("config %+v: want vxlanPort 4792 (live) and logPrefix still env", snap.Config)
	}
}

func cfgWrite(t *testing.T, st *store.Store, objs ...model.Object) {
	t.Helper()
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		t.Fatalf("write: %v", err)
	}
}
