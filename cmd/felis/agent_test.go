package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// recordingDataplane is a fake dataplane that records every sync.
type recordingDataplane struct {
	mu      sync.Mutex
	syncs   []bool // the full flag of each sync
	last    *snapshot.Snapshot
	pending []string
	fail    int // fail this many syncs first
}

func (r *recordingDataplane) Name() string { return "fake" }

func (r *recordingDataplane) Sync(_ context.Context, d *snapshot.Snapshot, full bool) (appliers.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs = append(r.syncs, full)
	if r.fail > 0 {
		r.fail--
		return appliers.Result{}, context.DeadlineExceeded
	}
	r.last = d
	return appliers.Result{Ops: []string{"op"}, Counts: map[string]int{"x": 1}}, nil
}

func (r *recordingDataplane) Pending(context.Context, *snapshot.Snapshot) ([]string, error) {
	return r.pending, nil
}

func newTestAgent(dp *recordingDataplane) (*agent, *store.Store) {
	st := store.New()
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", []appliers.Dataplane{dp}, st, derive.Options{})
	return a, st
}

func wepOn(node, name string) *model.WorkloadEndpoint {
	return &model.WorkloadEndpoint{Meta: model.Meta{Key: model.Key{Kind: model.KindWorkloadEndpoint, Namespace: "ns", Name: name}},
		Node: node, Workload: name, InterfaceName: "cali" + name}
}

func TestAgentNeverProgramsBeforeInSync(t *testing.T) {
	dp := &recordingDataplane{}
	a, st := newTestAgent(dp)
	st.RegisterSource("file")
	if _, err := st.Write(store.Batch{Upserts: []model.Object{wepOn("n1", "a")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.once(context.Background()); err == nil {
		t.Fatal("once succeeded before the datastore was in sync")
	}
	if len(dp.syncs) != 0 {
		t.Fatalf("dataplane synced %d times before in-sync", len(dp.syncs))
	}
	if err := st.MarkInSync("file"); err != nil {
		t.Fatal(err)
	}
	if err := a.once(context.Background()); err != nil {
		t.Fatalf("once: %v", err)
	}
	if len(dp.syncs) != 1 || !dp.syncs[0] || len(dp.last.Endpoints) != 1 {
		t.Fatalf("syncs %v, endpoints %d; want one full sync with one endpoint", dp.syncs, len(dp.last.Endpoints))
	}
}

func TestAgentOnceFailsWhenKernelDiffers(t *testing.T) {
	dp := &recordingDataplane{pending: []string{"add element inet felis s x"}}
	a, st := newTestAgent(dp)
	st.RegisterSource("file")
	_ = st.MarkInSync("file")
	if err := a.once(context.Background()); err == nil {
		t.Fatal("once succeeded although operations were still pending")
	}
}

func TestAgentLoopFollowsChangesAndRetriesFull(t *testing.T) {
	dp := &recordingDataplane{fail: 1}
	a, st := newTestAgent(dp)
	st.RegisterSource("file")
	_ = st.MarkInSync("file")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, time.Millisecond, time.Hour) }()
	// The first sync fails; the retry must be full, the one after a change incremental.
	waitFor(t, func() bool { return len(dp.fullFlags()) >= 2 })
	if _, err := st.Write(store.Batch{Upserts: []model.Object{wepOn("n1", "b")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { s := dp.fullFlags(); return len(s) >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := dp.fullFlags()
	if !s[0] || !s[1] || s[2] {
		t.Fatalf("full flags %v: want the failed first sync and its retry full, the next incremental", s)
	}
}

// fullFlags returns a copy of the full flag of every sync so far.
func (r *recordingDataplane) fullFlags() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.syncs...)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
