package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

// scriptedDataplane returns, per sync, what next says (ops by kind, or an error).
type scriptedDataplane struct {
	mu    sync.Mutex
	calls []bool // the full flag of each sync
	next  func(full bool) (map[string]int, error)
}

func (s *scriptedDataplane) Name() string { return "fake" }

func (s *scriptedDataplane) Sync(_ context.Context, _ *snapshot.Snapshot, full bool) (appliers.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, full)
	counts, err := s.next(full)
	if err != nil {
		return appliers.Result{}, err
	}
	r := appliers.Result{Counts: counts}
	for k, n := range counts {
		for range n {
			r.Ops = append(r.Ops, k)
		}
	}
	return r, nil
}

func (s *scriptedDataplane) Pending(context.Context, *snapshot.Snapshot) ([]string, error) {
	return nil, nil
}

func (s *scriptedDataplane) takeCalls() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// daemonAgent is an in-sync agent over dp with metrics, health (on clock) and status.
func daemonAgent(t *testing.T, dp appliers.Dataplane, clock *time.Time) (*agent, *store.Store) {
	t.Helper()
	st := store.New()
	st.RegisterSource("file")
	if err := st.MarkInSync("file"); err != nil {
		t.Fatal(err)
	}
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", []appliers.Dataplane{dp}, st, derive.Options{})
	t.Cleanup(a.deriver.Close)
	a.metrics = newAgentMetrics(st)
	a.health = newHealth(time.Minute, func() time.Time { return *clock }, []string{dp.Name()})
	return a, st
}

// gathered reads the agent's registry as "name{label=value,...}" -> value: a counter's or
// gauge's value, a histogram's sample count. Only felis_ metrics.
func gathered(t *testing.T, m *agentMetrics) map[string]float64 {
	t.Helper()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "felis_") {
			continue
		}
		for _, mt := range f.GetMetric() {
			var labels []string
			for _, l := range mt.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(labels)
			name := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch {
			case mt.Counter != nil:
				out[name] = mt.GetCounter().GetValue()
			case mt.Gauge != nil:
				out[name] = mt.GetGauge().GetValue()
			case mt.Histogram != nil:
				out[name] = float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// pick returns the entries of got named in want's keys (missing ones as absent).
func pick(got map[string]float64, want map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k := range want {
		if v, ok := got[k]; ok {
			out[k] = v
		}
	}
	return out
}

func TestAgentMetricsAndDrift(t *testing.T) {
	clock := time.Unix(1000, 0)
	fullOps, incOps := 2, 0
	var fail error
	dp := &scriptedDataplane{next: func(full bool) (map[string]int, error) {
		if fail != nil {
			return nil, fail
		}
		if full {
			return map[string]int{"add": fullOps}, nil
		}
		return map[string]int{"add": incOps}, nil
	}}
	a, st := daemonAgent(t, dp, &clock)
	ctx := context.Background()

	// Start: a full sync, not drift (nothing was known to be clean before it).
	if _, err := a.cycle(ctx); err != nil {
		t.Fatal(err)
	}
	// Periodic resync with nothing changed in the store: all its ops are drift.
	fullOps = 3
	a.full["fake"] = true
	if _, err := a.cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]bool{true, true}, dp.takeCalls()); d != "" {
		t.Errorf("syncs (-want +got):\n%s", d)
	}
	// Periodic resync after a store change: the agent catches up incrementally first, so
	// the full sync's ops (none here) are the only drift.
	if _, err := st.Write(store.Batch{Upserts: []model.Object{wepOn("n1", "a")}}); err != nil {
		t.Fatal(err)
	}
	a.firstChange.Store(time.Now().UnixNano())
	fullOps, incOps = 0, 1
	a.full["fake"] = true
	if _, err := a.cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]bool{false, true}, dp.takeCalls()); d != "" {
		t.Errorf("syncs of a periodic resync after a change (-want +got):\n%s", d)
	}
	// A failure counts, and readiness reports it.
	fail = errors.New("netlink: EPERM")
	if _, err := a.cycle(ctx); err == nil {
		t.Fatal("cycle succeeded with a failing dataplane")
	}
	a.reportProblems("file", datastore.Problems{
		{Where: "a.yaml:3", Resource: "GlobalNetworkPolicy p", Field: "spec.selector", Reason: "bad"},
		{Where: "b.yaml:1", Resource: "NetworkPolicy ns/q", Field: "spec.ingress[0]", Reason: "bad"},
		{Where: "file", Reason: "connection refused (retrying)"},
	})
	want := map[string]float64{
		"felis_cycles_total{}":                                4,
		"felis_cycle_derive_seconds{}":                        4,
		"felis_full_resyncs_total{dataplane=fake}":            3,
		"felis_ops_applied_total{dataplane=fake,kind=add}":    2 + 3 + 1,
		"felis_drift_repaired_ops_total{dataplane=fake}":      3,
		"felis_sync_failures_total{dataplane=fake}":           1,
		"felis_cycle_sync_seconds{dataplane=fake,full=true}":  3,
		"felis_cycle_sync_seconds{dataplane=fake,full=false}": 1,
		"felis_change_to_programmed_seconds{}":                1,
		"felis_invalid_resources{}":                           2,
		"felis_store_objects{kind=WorkloadEndpoint}":          1,
		"felis_store_objects{kind=GlobalNetworkPolicy}":       0,
	}
	if d := cmp.Diff(want, pick(gathered(t, a.metrics), want)); d != "" {
		t.Errorf("metrics (-want +got):\n%s", d)
	}
	if why := a.health.ready(); !strings.Contains(why, "dataplane fake: netlink: EPERM") {
		t.Errorf("readiness %q: want the dataplane's error", why)
	}
}

func TestAgentHealthEndpoints(t *testing.T) {
	clock := time.Unix(1000, 0)
	var fail error
	dp := &scriptedDataplane{next: func(bool) (map[string]int, error) { return nil, fail }}
	st := store.New()
	st.RegisterSource("file")
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", []appliers.Dataplane{dp}, st, derive.Options{})
	defer a.deriver.Close()
	a.health = newHealth(time.Minute, func() time.Time { return clock }, []string{"fake"})
	srv := httptest.NewServer(healthHandler(a.health, a.status))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	type probe struct {
		Code int
		Body string
	}
	check := func(step, path string, want probe) {
		t.Helper()
		code, body := get(path)
		if d := cmp.Diff(want, probe{code, body}); d != "" {
			t.Errorf("%s: GET %s (-want +got):\n%s", step, path, d)
		}
	}
	ctx := context.Background()
	if _, err := a.cycle(ctx); err != nil {
		t.Fatal(err)
	}
	check("before in-sync", "/readiness", probe{503, "datastore not in sync; dataplane fake: not synced yet"})
	check("before in-sync", "/liveness", probe{200, "ok"})
	_ = st.MarkInSync("file")
	if _, err := a.cycle(ctx); err != nil {
		t.Fatal(err)
	}
	check("programmed", "/readiness", probe{200, "ok"})
	fail = errors.New("nft: EBUSY")
	_, _ = a.cycle(ctx)
	check("sync failed", "/readiness", probe{503, "dataplane fake: nft: EBUSY"})
	fail = nil
	_, _ = a.cycle(ctx)
	check("recovered", "/readiness", probe{200, "ok"})

	clock = clock.Add(61 * time.Second)
	check("loop stalled", "/liveness", probe{503, "agent loop has not completed an iteration for 1m1s (limit 1m0s)"})
	a.health.loopIteration()
	check("loop moved", "/liveness", probe{200, "ok"})
}

func TestAgentLoopHeartbeatKeepsLiveness(t *testing.T) {
	dp := &scriptedDataplane{next: func(bool) (map[string]int, error) { return nil, nil }}
	var mu sync.Mutex
	clock := time.Unix(1000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	st := store.New()
	st.RegisterSource("file")
	_ = st.MarkInSync("file")
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", []appliers.Dataplane{dp}, st, derive.Options{})
	defer a.deriver.Close()
	a.livenessTimeout = 30 * time.Millisecond
	a.health = newHealth(time.Minute, now, []string{"fake"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.run(ctx, time.Millisecond, time.Hour) }()
	waitFor(t, func() bool { return len(dp.takeCalls()) > 0 })
	// With no change at all, the loop still wakes (every 10 ms here) and refreshes liveness.
	mu.Lock()
	clock = clock.Add(2 * time.Minute)
	mu.Unlock()
	waitFor(t, func() bool { return a.health.live() == "" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestStatusBook(t *testing.T) {
	ep := func(id, hash string, policies ...string) snapshot.Endpoint {
		return snapshot.Endpoint{ID: id, Interface: "cali" + id[len(id)-1:], Hash: hash,
			Ingress: snapshot.Direction{Tiers: []snapshot.TierPolicies{{Tier: "default", Policies: policies}}}}
	}
	snap := func(polHash string) *snapshot.Snapshot {
		return &snapshot.Snapshot{
			Policies:  []snapshot.Policy{{ID: "default/p", Hash: polHash}},
			Endpoints: []snapshot.Endpoint{ep("ns/a", "ha", "default/p"), ep("ns/b", "hb")},
		}
	}
	t0 := time.Unix(100, 0).UTC()
	type row struct {
		ID, State, Reason string
		Revision          uint64
		Time              time.Time
	}
	rows := func(b *statusBook) []row {
		var out []row
		for _, e := range b.snapshot().Endpoints {
			out = append(out, row{e.ID, e.State, e.Reason, e.Revision, e.Time})
		}
		return out
	}
	b := newStatusBook("n1")
	b.record(snap("p1"), 5, t0, "")
	if d := cmp.Diff([]row{{"ns/a", "programmed", "", 5, t0}, {"ns/b", "programmed", "", 5, t0}}, rows(b)); d != "" {
		t.Errorf("first sync (-want +got):\n%s", d)
	}
	// The policy of ns/a changes and the sync fails: ns/a is in error, ns/b (unaffected,
	// still in place) stays programmed at its revision.
	b.record(snap("p2"), 7, t0.Add(time.Second), "nftables: EPERM")
	if d := cmp.Diff([]row{{"ns/a", "error", "nftables: EPERM", 7, t0.Add(time.Second)}, {"ns/b", "programmed", "", 5, t0}}, rows(b)); d != "" {
		t.Errorf("failed sync (-want +got):\n%s", d)
	}
	// The same failure again keeps the time it started.
	b.record(snap("p2"), 8, t0.Add(2*time.Second), "nftables: EPERM")
	if d := cmp.Diff([]row{{"ns/a", "error", "nftables: EPERM", 7, t0.Add(time.Second)}, {"ns/b", "programmed", "", 5, t0}}, rows(b)); d != "" {
		t.Errorf("repeated failure (-want +got):\n%s", d)
	}
	b.record(snap("p2"), 9, t0.Add(3*time.Second), "")
	if d := cmp.Diff([]row{{"ns/a", "programmed", "", 9, t0.Add(3 * time.Second)}, {"ns/b", "programmed", "", 5, t0}}, rows(b)); d != "" {
		t.Errorf("recovered (-want +got):\n%s", d)
	}
	if r := b.snapshot(); r.Revision != 9 || r.LastError != "" {
		t.Errorf("report revision %d, last error %q: want 9 and none", r.Revision, r.LastError)
	}
}

func TestStatusCommand(t *testing.T) {
	b := newStatusBook("n1")
	b.setInSync(true)
	b.record(&snapshot.Snapshot{Endpoints: []snapshot.Endpoint{{ID: "ns/a-eth0", Namespace: "ns", Workload: "a", Interface: "calia", Hash: "h"}}}, 3, time.Now().Add(-time.Minute), "")
	srv := httptest.NewServer(healthHandler(newHealth(time.Minute, time.Now, nil), b))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var text bytes.Buffer
	if err := runStatus(context.Background(), addr, "text", &text); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(text.String()), "\n")
	if len(lines) != 3 || lines[0] != "node n1, in sync true, programmed revision 3" ||
		strings.Join(strings.Fields(lines[2]), " ") != "ns/a-eth0 ns/a calia programmed 3 1m0s ago" {
		t.Errorf("text output:\n%s", text.String())
	}
	var js bytes.Buffer
	if err := runStatus(context.Background(), addr, "json", &js); err != nil {
		t.Fatal(err)
	}
	var r StatusReport
	if err := json.Unmarshal(js.Bytes(), &r); err != nil {
		t.Fatalf("json output does not decode: %v\n%s", err, js.String())
	}
	if len(r.Endpoints) != 1 || r.Endpoints[0].State != "programmed" || r.Endpoints[0].Revision != 3 {
		t.Errorf("json report %+v", r)
	}
	if err := runStatus(context.Background(), "127.0.0.1:1", "text", io.Discard); err == nil || !strings.Contains(err.Error(), "is felis agent running") {
		t.Errorf("error for a missing agent: %v", err)
	}
}

// flakySource is a datastore whose Load fails the first loadFails times and whose Watch
// fails the first fails times, then runs until ctx ends.
type flakySource struct {
	mu        sync.Mutex
	loadFails int
	loads     int
	fails     int
	watches   int
}

func (f *flakySource) Name() string { return "flaky" }

func (f *flakySource) Load(_ context.Context, st *store.Store) (datastore.Problems, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	if f.loadFails > 0 {
		f.loadFails--
		return nil, errors.New("no route to host")
	}
	st.RegisterSource("flaky")
	return datastore.Problems{{Where: "x.yaml:1", Resource: "NetworkPolicy ns/p", Reason: "bad"}}, st.MarkInSync("flaky")
}

func (f *flakySource) Watch(ctx context.Context, _ *store.Store, _ func(datastore.Problems)) error {
	f.mu.Lock()
	f.watches++
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return errors.New("connection refused")
	}
	<-ctx.Done()
	return nil
}

func TestAgentWatchOutageRetriesAndReportsReadiness(t *testing.T) {
	clock := time.Unix(1000, 0)
	dp := &scriptedDataplane{next: func(bool) (map[string]int, error) { return nil, nil }}
	a, _ := daemonAgent(t, dp, &clock)
	if _, err := a.cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := &flakySource{fails: 1}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.watch(ctx, src); close(done) }()
	waitFor(t, func() bool { return strings.Contains(a.health.ready(), "datastore unavailable: connection refused") })
	// The watch is retried after the backoff and, once it holds, readiness recovers.
	waitFor(t, func() bool { return a.health.ready() == "" })
	cancel()
	<-done
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.watches != 2 {
		t.Errorf("%d watches, want 2 (the failed one and its retry)", src.watches)
	}
}

func TestAgentLoadRetriesUntilTheDatastoreAnswers(t *testing.T) {
	clock := time.Unix(1000, 0)
	dp := &scriptedDataplane{next: func(bool) (map[string]int, error) { return nil, nil }}
	st := store.New()
	a := newAgent(slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", []appliers.Dataplane{dp}, st, derive.Options{})
	defer a.deriver.Close()
	a.metrics = newAgentMetrics(st)
	a.health = newHealth(time.Minute, func() time.Time { return clock }, []string{"fake"})
	src := &flakySource{loadFails: 1}
	if !a.load(context.Background(), src) {
		t.Fatal("load gave up")
	}
	if src.loads != 2 || !st.InSync() {
		t.Errorf("%d loads, in sync %v: want a failed load, a retry, and a store in sync", src.loads, st.InSync())
	}
	if got := gathered(t, a.metrics)["felis_invalid_resources{}"]; got != 1 {
		t.Errorf("invalid resources %v after the load, want 1", got)
	}
	if why := a.health.ready(); strings.Contains(why, "no route to host") {
		t.Errorf("readiness still reports the datastore after it loaded: %q", why)
	}
	if len(dp.takeCalls()) != 0 {
		t.Error("the dataplane was synced during load")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if a.load(ctx, &flakySource{loadFails: 100}) {
		t.Error("load succeeded against a datastore that never answers")
	}
}

func TestKeepChangeStampKeepsTheEarliest(t *testing.T) {
	tests := []struct{ cur, at, want int64 }{
		{0, 0, 0}, // nothing to put back
		{0, 5, 5}, // no newer change: put back
		{9, 5, 5}, // a newer change stamped later: the earlier one counts
		{3, 5, 3}, // already earlier (cannot happen in the loop, but must not move forward)
		{7, 0, 7}, // nothing to put back: keep the newer stamp
	}
	for _, tc := range tests {
		a := &agent{}
		a.firstChange.Store(tc.cur)
		a.keepChangeStamp(tc.at)
		if got := a.firstChange.Load(); got != tc.want {
			t.Errorf("stamp %d, put back %d: got %d, want %d", tc.cur, tc.at, got, tc.want)
		}
	}
}
