package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

func writeConfigFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "felis.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveAgentConfigProcessKeys(t *testing.T) {
	file := writeConfigFile(t, "healthAddr: 127.0.0.1:1\nmetricsaddr: 127.0.0.1:2\nlogLevel: debug\nresyncInterval: 5m\n")
	cmd := newAgentCmd()
	fl := cmd.Flags()
	if err := fl.Set("health-addr", "127.0.0.1:9"); err != nil { // explicit flag: wins over all
		t.Fatal(err)
	}
	env := envOf(map[string]string{"FELIS_METRICSADDR": "127.0.0.1:3", "FELIS_NODENAME": "n7"})
	c, err := resolveAgentConfig(fl, file, env)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, k := range []string{"healthAddr", "metricsAddr", "logLevel", "resyncInterval", "nodeName", "coalesce"} {
		var flag string
		for _, p := range processKeys {
			if p.key == k {
				flag = p.flag
			}
		}
		got[k] = [2]string{fl.Lookup(flag).Value.String(), c.processes[k]}
	}
	want := map[string][2]string{
		"healthAddr":     {"127.0.0.1:9", "flag --health-addr"},
		"metricsAddr":    {"127.0.0.1:3", "environment FELIS_METRICSADDR"},
		"logLevel":       {"debug", "config file " + file},
		"resyncInterval": {"5m0s", "config file " + file},
		"nodeName":       {"n7", "environment FELIS_NODENAME"},
		"coalesce":       {"50ms", "default"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("value and source per key (-want +got):\n%s", d)
	}
}

func TestResolveAgentConfigErrors(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"unknown file key", "healthAdr: x\n", nil, `unknown key "healthAdr"`},
		{"bad duration in file", "resyncInterval: soon\n", nil, "resyncInterval"},
		{"bad duration in env", "", map[string]string{"FELIS_COALESCE": "x"}, "environment FELIS_COALESCE"},
		{"not a map", "- a\n", nil, "config file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := ""
			if tc.file != "" {
				file = writeConfigFile(t, tc.file)
			}
			_, err := resolveAgentConfig(newAgentCmd().Flags(), file, envOf(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestParseFailsafeEnv(t *testing.T) {
	tests := []struct {
		in   string
		want []any
		ok   bool
	}{
		{"tcp:22,udp:68", []any{map[string]any{"protocol": "tcp", "port": 22}, map[string]any{"protocol": "udp", "port": 68}}, true},
		{"tcp:10.0.0.0/8:179", []any{map[string]any{"protocol": "tcp", "net": "10.0.0.0/8", "port": 179}}, true},
		{"tcp:fd00::/8:179", []any{map[string]any{"protocol": "tcp", "net": "fd00::/8", "port": 179}}, true},
		{"none", []any{}, true},
		{"22", nil, false},
		{"tcp:x", nil, false},
	}
	for _, tc := range tests {
		got, ok := parseFailsafeEnv(tc.in)
		if ok != tc.ok {
			t.Errorf("%q: ok %v, want %v", tc.in, ok, tc.ok)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestPrintConfigSources(t *testing.T) {
	file := writeConfigFile(t, "vxlanPort: 5000\nmaxIpsetSize: lots\nlogPrefix: file\n")
	env := envOf(map[string]string{"FELIS_VXLANVNI": "7", "FELIS_LOGPREFIX": "env", "FELIS_FAILSAFEINBOUNDHOSTPORTS": "tcp:22"})
	cmd := newAgentCmd()
	c, err := resolveAgentConfig(cmd.Flags(), file, env)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New()
	fc := func(name string, spec map[string]any) model.Object {
		return &model.FelixConfiguration{Meta: model.Meta{Key: model.Key{Kind: model.KindFelixConfiguration, Name: name}, Source: model.Source{Name: "test"}}, Spec: spec}
	}
	if _, err := st.Write(store.Batch{Upserts: []model.Object{
		fc("default", map[string]any{"chainInsertMode": "Append", "vxlanPort": 4790, "vxlanMTU": 1400}),
		fc("node.n1", map[string]any{"vxlanMTU": 1300, "vxlanPort": 4791}),
	}}); err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, r := range c.rows(cmd.Flags(), st.View(), "n1") {
		got[r.Key] = [2]string{r.Value, r.Source}
	}
	want := map[string][2]string{
		"vxlanPort":                {"5000", "config file " + file},
		"vxlanVNI":                 {"7", "environment FELIS_VXLANVNI"},
		"logPrefix":                {"env", "environment FELIS_LOGPREFIX"},
		"failsafeInboundHostPorts": {"tcp:22", "environment FELIS_FAILSAFEINBOUNDHOSTPORTS"},
		"vxlanMTU":                 {"1300", "FelixConfiguration node.n1"},
		"chainInsertMode":          {"append", "FelixConfiguration default"},
		"maxIpsetSize":             {"1048576", "built-in"}, // the file's value is invalid: skipped
		"vxlanEnabled":             {"false", "IP pools"},
		"healthAddr":               {"127.0.0.1:9099", "default"},
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			delete(got, k)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("value and source per key (-want +got):\n%s", d)
	}
	var buf bytes.Buffer
	if err := printConfig(&buf, c.rows(cmd.Flags(), st.View(), "n1")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "KEY") || !strings.Contains(buf.String(), "FelixConfiguration node.n1") {
		t.Errorf("printed table lacks its header or a source:\n%s", buf.String())
	}
}
