//go:build linux

package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/nftables"
	"github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model/store"
)

// These tests drive the real nftables applier against its transactional in-memory fake, so
// they need no root: what a restart, a shutdown or invalid input does to the table is the
// applier's and the agent's logic, which the fake holds to the kernel's semantics.

// fakeNftAgent is an agent for node-a of a copy of examples/cluster (plus extra files),
// syncing the nftables applier onto fake.
type fakeNftAgent struct {
	a   *agent
	st  *store.Store
	src datastore.Source
	dir string
}

func newFakeNftAgent(t *testing.T, fake *nftables.Fake, dir string) *fakeNftAgent {
	t.Helper()
	src, err := datastore.Open("file:" + dir)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New()
	dp := &nftDataplane{applier: nftables.NewApplier(fake), renderer: render.NewRenderer()}
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "node-a", []appliers.Dataplane{dp}, st, derive.Options{})
	t.Cleanup(a.deriver.Close)
	a.metrics = newAgentMetrics(st)
	problems, err := src.Load(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	a.reportProblems(src.Name(), problems)
	return &fakeNftAgent{a: a, st: st, src: src, dir: dir}
}

// clusterCopy copies examples/cluster into a fresh directory.
func clusterCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob("../../examples/cluster/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/cluster: %v (%d files)", err, len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// opsOf runs one cycle and returns the ops it applied (via the ops counter).
func cycleOps(t *testing.T, a *agent) int {
	t.Helper()
	before := gathered(t, a.metrics)
	if _, err := a.cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := gathered(t, a.metrics)
	n := 0.0
	for k, v := range after {
		if strings.HasPrefix(k, "felis_ops_applied_total{") {
			n += v - before[k]
		}
	}
	return int(n)
}

func TestAgentRestartAdoptsTableWithoutChanges(t *testing.T) {
	fake := nftables.NewFake()
	dir := clusterCopy(t)
	first := newFakeNftAgent(t, fake, dir)
	if n := cycleOps(t, first.a); n == 0 {
		t.Fatal("the first agent programmed nothing; the test would prove nothing")
	}
	programmed, applies := fake.Dump(), fake.Applies()

	// A new process: a new store, deriver and applier, and the table left in place.
	second := newFakeNftAgent(t, fake, dir)
	if !second.a.full["nftables"] {
		t.Fatal("a new agent's first sync must read the kernel")
	}
	if n := cycleOps(t, second.a); n != 0 {
		t.Errorf("the restarted agent applied %d ops to an unchanged table; want 0", n)
	}
	if fake.Applies() != applies {
		t.Errorf("the restarted agent committed %d batches; want none", fake.Applies()-applies)
	}
	if d := cmp.Diff(programmed, fake.Dump()); d != "" {
		t.Errorf("table changed across the restart (-before +after):\n%s", d)
	}
}

func TestAgentShutdownLeavesDataplane(t *testing.T) {
	fake := nftables.NewFake()
	fa := newFakeNftAgent(t, fake, clusterCopy(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fa.a.run(ctx, time.Millisecond, time.Hour) }()
	waitFor(t, func() bool { return fake.Applies() > 0 })
	waitFor(t, func() bool { return fa.a.status.snapshot().Revision > 0 })
	programmed := fake.Dump()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	if programmed == "" {
		t.Fatal("nothing was programmed")
	}
	if d := cmp.Diff(programmed, fake.Dump()); d != "" {
		t.Errorf("table changed by shutdown (-before +after):\n%s", d)
	}
}

// policyV1 isolates node-a's workloads in namespace shop but admits TCP 8080 from app=web;
// policyBad is the same policy with a selector that does not parse.
const (
	policyV1 = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: lkg-test}
spec:
  selector: all()
  order: 1
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: "app == 'web'"}
    destination: {ports: [8080]}
`
	policyBad = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: lkg-test}
spec:
  selector: all()
  order: 1
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: "app == "}
    destination: {ports: [8080]}
`
)

func TestAgentInvalidPolicyNeverClearsDataplane(t *testing.T) {
	fake := nftables.NewFake()
	dir := clusterCopy(t)
	policyFile := filepath.Join(dir, "zz-lkg.yaml")
	writeAtomically(t, policyFile, policyV1)
	fa := newFakeNftAgent(t, fake, dir)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- fa.src.Watch(ctx, fa.st, func(p datastore.Problems) { fa.a.reportProblems(fa.src.Name(), p) })
	}()
	runDone := make(chan error, 1)
	go func() { runDone <- fa.a.run(ctx, time.Millisecond, time.Hour) }()
	waitFor(t, func() bool { return fa.a.status.snapshot().Revision > 0 })
	programmed := fake.Dump()
	if !strings.Contains(programmed, "8080") {
		t.Fatalf("the valid policy is not programmed:\n%s", programmed)
	}

	writeAtomically(t, policyFile, policyBad)
	waitFor(t, func() bool { return gathered(t, fa.a.metrics)["felis_invalid_resources{}"] == 1 })
	// Let any cycle the change could trigger run, then check the table.
	rev := fa.st.Revision()
	waitFor(t, func() bool { r := fa.a.status.snapshot(); return r.Revision >= rev && r.LastError == "" })
	if d := cmp.Diff(programmed, fake.Dump()); d != "" {
		t.Errorf("an invalid policy version changed the table (-valid +now):\n%s", d)
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if err := <-watchDone; err != nil {
		t.Fatal(err)
	}
}

func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
