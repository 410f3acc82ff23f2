package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/derive"
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

func TestWatchConfigFileAppliesDataplaneKeys(t *testing.T) {
	file := writeConfigFile(t, "vxlanPort: 5000\nlogLevel: info\n")
	c, err := resolveAgentConfig(newAgentCmd().Flags(), file, envOf(map[string]string{"FELIS_LOGPREFIX": "env"}))
	if err != nil {
		t.Fatal(err)
	}
	var logBuf lockedLog
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	apply := make(chan []derive.ConfigOverride)
	go c.watchConfigFile(ctx, 5*time.Millisecond, log, apply)

	rewrite := func(text string) {
		t.Helper()
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	next := func() []derive.ConfigOverride {
		t.Helper()
		select {
		case o := <-apply:
			return o
		case <-time.After(5 * time.Second):
			t.Fatal("no overrides applied within 5 s")
			return nil
		}
	}
	// A broken file and a process-key change apply nothing; a dataplane change applies, with
	// the environment still on top.
	rewrite("vxlanPort: [\n")
	waitFor(t, func() bool { return strings.Contains(logBuf.String(), "config file unreadable") })
	rewrite("vxlanPort: 5000\nlogLevel: debug\n")
	waitFor(t, func() bool { return strings.Contains(logBuf.String(), "needs a restart") })
	rewrite("vxlanPort: 5001\nlogLevel: debug\n")
	got := next()
	want := []derive.ConfigOverride{
		{Name: "config file " + file, Spec: map[string]any{"vxlanPort": float64(5001)}},
		{Name: "environment", Spec: map[string]any{"logPrefix": "env"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("overrides (-want +got):\n%s", d)
	}
	select {
	case o := <-apply:
		t.Errorf("overrides applied again without a change: %v", o)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestAgentAppliesReconfiguration(t *testing.T) {
	dp := &recordingDataplane{}
	a, st := newTestAgent(dp)
	st.RegisterSource("file")
	_ = st.MarkInSync("file")
	reconfig := make(chan []derive.ConfigOverride)
	a.reconfigure = reconfig
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, time.Millisecond, time.Hour) }()
	lastPrefix := func() string {
		dp.mu.Lock()
		defer dp.mu.Unlock()
		if dp.last == nil {
			return ""
		}
		return dp.last.Config.LogPrefix
	}
	waitFor(t, func() bool { return lastPrefix() == "calico-packet" })
	reconfig <- []derive.ConfigOverride{{Name: "config file x", Spec: map[string]any{"logPrefix": "reloaded"}}}
	waitFor(t, func() bool { return lastPrefix() == "reloaded" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	a.deriver.Close()
}

// lockedLog is a log sink safe for a writing goroutine and a reading test.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
