package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/datastore"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

func init() { rootCmd.AddCommand(newAgentCmd()) }

// policyDataplanes builds the policy applier for --dataplane; routing is added in every mode.
// Each dataplane registers itself from its own file.
var policyDataplanes = map[string]func() (appliers.Dataplane, error){}

// hostInterfaces lists the node's interfaces and addresses (netlink on Linux): the agent
// places host endpoints with only expectedIPs on the interfaces carrying them before each
// policy sync. nil where there is no such listing.
var hostInterfaces appliers.Interfaces

// routingDataplane builds the netlink applier (routes, VXLAN, interface settings), when
// that applier is built in.
var routingDataplane func(node string) (appliers.Dataplane, error)

type agentFlags struct {
	datastore       string
	node            string
	dataplane       string
	once            bool
	noRouting       bool
	resync          time.Duration
	coalesce        time.Duration
	logLevel        string
	config          string
	printConfig     bool
	healthAddr      string
	metricsAddr     string
	livenessTimeout time.Duration
	logRepeat       time.Duration
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node daemon: watch the datastore, derive, and program the dataplane",
		Long: `agent loads the datastore, waits until every source is in sync, then runs forever:
store change -> derive the node's snapshot -> plan minimal operations -> apply, coalescing
bursts of changes, with a full read of the kernel at start, every --resync-interval and after
any failure. Policy goes to the chosen dataplane; routes, the VXLAN device and workload
interface settings go through netlink in every mode.

With --once it programs one cycle and exits 0 only if the kernel then matches the snapshot.

Configuration, highest first: explicit flags; the environment (FELIS_ + the key in upper
case, e.g. FELIS_NODENAME, FELIS_HEALTHADDR, FELIS_VXLANPORT); the --config YAML file (the
same keys); FelixConfiguration node.NODE; FelixConfiguration default; built-in defaults.
FelixConfiguration edits apply without a restart. --print-config shows every effective
value and where it came from.

--health-addr serves /liveness, /readiness and /status (per-endpoint programming status,
read by felis status); --metrics-addr serves Prometheus /metrics. An empty address
disables the server.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.datastore, "datastore", "file:examples/cluster", "datastore: file:PATH, kubernetes or etcd:URL")
	fl.StringVar(&f.node, "node", "", "this node's name (required)")
	fl.StringVar(&f.dataplane, "dataplane", "nftables", "policy dataplane: nftables, iptables or bpf")
	fl.BoolVar(&f.once, "once", false, "program one cycle, verify the kernel matches, and exit")
	fl.BoolVar(&f.noRouting, "no-routing", false, "do not program routes, VXLAN or interface settings (policy only)")
	fl.DurationVar(&f.resync, "resync-interval", 90*time.Second, "how often to re-read the kernel and repair drift")
	fl.DurationVar(&f.coalesce, "coalesce", 50*time.Millisecond, "wait this long after a change for more before deriving")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.config, "config", "", "YAML config file (keys as in --print-config; env FELIS_* wins over it)")
	fl.BoolVar(&f.printConfig, "print-config", false, "print the effective configuration and where each value came from, then exit")
	fl.StringVar(&f.healthAddr, "health-addr", "127.0.0.1:9099", "address for /liveness, /readiness and /status (empty: off)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", ":9091", "address for Prometheus /metrics (empty: off)")
	fl.DurationVar(&f.livenessTimeout, "liveness-timeout", 60*time.Second, "/liveness fails when the agent loop made no progress for this long")
	fl.DurationVar(&f.logRepeat, "log-repeat-interval", 30*time.Second, "log an identical message at most once per interval, with a suppressed count (0: off)")
	return cmd
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	cfg, err := resolveAgentConfig(cmd.Flags(), f.config, os.Getenv)
	if err != nil {
		return err
	}
	if f.node == "" {
		return fmt.Errorf("--node (or FELIS_NODENAME, or nodeName in the config file) is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", f.logLevel, err)
	}
	log := slog.New(newRepeatLimiter(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}), f.logRepeat, time.Now))
	opts := derive.Options{ConfigOverrides: cfg.overrides}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if f.printConfig {
		st, _, err := openStore(ctx, f.datastore)
		if err != nil {
			return err
		}
		return printConfig(cmd.OutOrStdout(), cfg.rows(cmd.Flags(), st.View(), f.node))
	}
	if _, errs := derive.ResolveConfigOptions(store.New().View(), f.node, opts); len(errs) > 0 {
		for _, e := range errs {
			log.Warn("invalid configuration value ignored", "err", e)
		}
	}

	build, ok := policyDataplanes[f.dataplane]
	if !ok {
		return fmt.Errorf("--dataplane %q: not available (have: %s)", f.dataplane, strings.Join(sortedKeys(policyDataplanes), ", "))
	}
	policy, err := build()
	if err != nil {
		return fmt.Errorf("--dataplane %s: %w", f.dataplane, err)
	}
	if hostInterfaces != nil {
		policy = appliers.ResolvingHostEndpoints(policy, hostInterfaces)
	}
	dps := []appliers.Dataplane{policy}
	if !f.noRouting && routingDataplane != nil {
		r, err := routingDataplane(f.node)
		if err != nil {
			return fmt.Errorf("routing dataplane: %w", err)
		}
		dps = append(dps, r)
	}

	src, err := datastore.Open(f.datastore)
	if err != nil {
		return err
	}
	st := store.New()
	a := newAgent(log, f.node, dps, st, opts)
	defer func() { a.deriver.Close() }()
	a.livenessTimeout = f.livenessTimeout
	a.health = newHealth(f.livenessTimeout, time.Now, dataplaneNames(dps))
	a.metrics = newAgentMetrics(st)
	if !f.once {
		if err := a.serve(ctx, f.healthAddr, f.metricsAddr); err != nil {
			return err
		}
	}

	if f.once {
		problems, err := src.Load(ctx, st)
		if err != nil {
			return fmt.Errorf("--datastore %s: %w", f.datastore, err)
		}
		a.reportProblems(src.Name(), problems)
		return a.once(ctx)
	}
	if !a.load(ctx, src) {
		a.log.Info("stopping before the first load; the dataplane was not touched")
		return nil
	}
	go a.watch(ctx, src)
	reconfig := make(chan []derive.ConfigOverride)
	a.reconfigure = reconfig
	go cfg.watchConfigFile(ctx, 2*time.Second, log, reconfig)
	return a.run(ctx, f.coalesce, f.resync)
}

// load reads the datastore's initial state, retrying with backoff (1 s doubling to 30 s)
// while it is unreachable: the agent stays up (live, not ready) and programs nothing, so a
// restart during an outage leaves the kernel as the last agent left it. It returns false
// when ctx ended first.
func (a *agent) load(ctx context.Context, src datastore.Source) bool {
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		problems, err := src.Load(ctx, a.st)
		if err == nil {
			a.health.datastore(nil)
			a.reportProblems(src.Name(), problems)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.health.datastore(err)
		a.health.loopIteration()
		a.log.Error("datastore load failed; nothing programmed, retrying", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
	}
}

// watch follows the datastore until ctx ends. When the watch fails (an outage, a vanished
// directory) the store keeps its last state and the dataplane stays programmed as it is;
// readiness reports the outage, and the watch restarts with backoff (up to 30 s). A watch
// that has run for watchHealthy without failing counts as recovered.
func (a *agent) watch(ctx context.Context, src datastore.Source) {
	const watchHealthy = time.Second
	backoff := time.Duration(0)
	for {
		failed := make(chan error, 1)
		go func() {
			err := src.Watch(ctx, a.st, func(p datastore.Problems) { a.reportProblems(src.Name(), p) })
			if err == nil && ctx.Err() == nil {
				err = errors.New("watch ended")
			}
			failed <- err
		}()
		var err error
		select {
		case err = <-failed:
		case <-time.After(watchHealthy):
			a.health.datastore(nil)
			backoff = 0
			err = <-failed
		}
		if ctx.Err() != nil {
			return
		}
		a.health.datastore(err)
		backoff = min(max(2*backoff, 500*time.Millisecond), 30*time.Second)
		a.log.Error("datastore watch failed; keeping the last state and the dataplane as programmed, retrying", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// newAgent returns an agent whose first sync of every dataplane reads the kernel.
func newAgent(log *slog.Logger, node string, dps []appliers.Dataplane, st *store.Store, opts derive.Options) *agent {
	a := &agent{log: log, node: node, dps: dps, st: st, opts: opts,
		full: map[string]bool{}, clean: map[string]bool{}, lastRev: map[string]uint64{},
		deriver: derive.NewDeriver(st, node, opts), status: newStatusBook(node)}
	for _, dp := range dps {
		a.full[dp.Name()] = true // the first sync of every dataplane reads the kernel
	}
	return a
}

func dataplaneNames(dps []appliers.Dataplane) []string {
	var out []string
	for _, dp := range dps {
		out = append(out, dp.Name())
	}
	return out
}

// serve starts the health (/liveness, /readiness, /status) and metrics servers; each stops
// when ctx ends. An empty address leaves that server off.
func (a *agent) serve(ctx context.Context, healthAddr, metricsAddr string) error {
	start := func(what, addr string, h http.Handler) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s server: %w", what, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error(what+" server stopped", "addr", addr, "err", err)
			}
		}()
		a.log.Info("serving "+what, "addr", ln.Addr().String())
		return nil
	}
	if err := start("health", healthAddr, healthHandler(a.health, a.status)); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	return start("metrics", metricsAddr, mux)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// reportProblems logs every problem a datastore reported (rate-limited, so a watch that
// re-reports the same list does not flood the log) and sets the invalid-resources gauge to
// the number of rejected resources: problems other than the source's own connection errors.
func (a *agent) reportProblems(source string, ps datastore.Problems) {
	invalid := 0
	for _, p := range ps {
		if p.Resource == "" && p.Field == "" && p.Where == source {
			a.log.Warn("datastore problem", "problem", p.String())
			continue
		}
		invalid++
		a.log.Warn("invalid resource rejected; its last valid version, if any, stays in force", "problem", p.String())
	}
	a.metrics.setInvalid(invalid)
}

// agent is the node daemon's cycle: derive the snapshot and sync every dataplane.
type agent struct {
	log  *slog.Logger
	node string
	dps  []appliers.Dataplane
	st   *store.Store
	full map[string]bool // dataplanes whose next sync must read the kernel
	// deriver derives each cycle incrementally (a cycle costs what the change costs); nil
	// means a full derive every cycle.
	deriver *derive.Deriver
	opts    derive.Options // for the full derive when deriver is nil

	// clean: the dataplane's last sync succeeded after its first, so a periodic full sync's
	// ops beyond catching up are drift. lastRev: the revision it last programmed.
	clean   map[string]bool
	lastRev map[string]uint64

	metrics         *agentMetrics // nil: no metrics
	health          *health       // nil: no health tracking
	status          *statusBook   // nil: no endpoint status
	livenessTimeout time.Duration // the loop wakes at least every third of it (0: 20 s)

	// reconfigure delivers new config overrides (a changed config file): the agent derives
	// with them from the next cycle on. nil: never.
	reconfigure <-chan []derive.ConfigOverride

	// firstChange is the UnixNano time of the first store change since the last cycle took
	// its view (0: none), for the change-to-programmed latency.
	firstChange atomic.Int64
}

// cycle derives and syncs once. It never runs before the store is in sync.
func (a *agent) cycle(ctx context.Context) (*snapshot.Snapshot, error) {
	// Take the change stamp before the view: a change landing in between is then counted
	// from the next cycle's point of view, never lost.
	changedAt := a.firstChange.Swap(0)
	// The in-sync mark is read with the view, so a view taken before the last source synced
	// can never be programmed.
	view := a.st.View()
	a.health.setInSync(view.InSync())
	if a.status != nil {
		a.status.setInSync(view.InSync())
	}
	if !view.InSync() {
		a.keepChangeStamp(changedAt)
		a.log.Info("waiting for every datastore source to be in sync; nothing programmed")
		return nil, nil
	}
	start := time.Now()
	var snap *snapshot.Snapshot
	var err error
	if a.deriver != nil {
		snap, err = a.deriver.Derive(view)
	} else {
		snap, err = derive.Derive(view, a.node, a.opts)
	}
	deriveTime := time.Since(start)
	a.metrics.observeDerive(deriveTime)
	if err != nil {
		a.keepChangeStamp(changedAt)
		if a.status != nil {
			a.status.fail("derive: " + err.Error())
		}
		return nil, fmt.Errorf("derive: %w", err)
	}
	var errs []error
	for _, dp := range a.dps {
		if err := a.syncOne(ctx, dp, snap, view.Revision(), deriveTime); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dp.Name(), err))
		}
	}
	err = errors.Join(errs...)
	failure := ""
	if err != nil {
		failure = err.Error()
		a.keepChangeStamp(changedAt) // measured when a later cycle programs it
	} else {
		a.metrics.programmed(view.Revision(), time.Since(time.Unix(0, changedAt)), changedAt != 0)
	}
	if a.status != nil {
		a.status.record(snap, view.Revision(), time.Now(), failure)
	}
	return snap, err
}

// syncOne syncs one dataplane. A periodic full sync after a clean state first catches up
// incrementally when the store moved, so that what the full sync applies is pure drift.
func (a *agent) syncOne(ctx context.Context, dp appliers.Dataplane, snap *snapshot.Snapshot, rev uint64, deriveTime time.Duration) error {
	name := dp.Name()
	full := a.full[name]
	drift := full && a.clean[name]
	if drift && a.lastRev[name] != rev {
		t0 := time.Now()
		res, err := dp.Sync(ctx, snap, false)
		if err != nil {
			return a.syncFailed(name, err)
		}
		a.metrics.observeSync(name, time.Since(t0), false, res.Counts, 0)
		a.logProgrammed(name, rev, false, res, deriveTime, time.Since(t0))
	}
	t0 := time.Now()
	res, err := dp.Sync(ctx, snap, full)
	if err != nil {
		return a.syncFailed(name, err)
	}
	took := time.Since(t0)
	a.full[name], a.clean[name], a.lastRev[name] = false, true, rev
	a.health.synced(name, nil)
	driftOps := 0
	if drift {
		driftOps = len(res.Ops)
	}
	a.metrics.observeSync(name, took, full, res.Counts, driftOps)
	if driftOps > 0 {
		a.log.Warn("repaired kernel drift", "dataplane", name, "ops", driftOps, "counts", formatCounts(res.Counts))
	}
	a.logProgrammed(name, rev, full, res, deriveTime, took)
	return nil
}

func (a *agent) syncFailed(name string, err error) error {
	a.full[name], a.clean[name] = true, false
	a.health.synced(name, err)
	a.metrics.syncFailed(name)
	a.log.Error("dataplane sync failed; the previous state stays in place", "dataplane", name, "err", err)
	return err
}

func (a *agent) logProgrammed(name string, rev uint64, full bool, res appliers.Result, deriveTime, apply time.Duration) {
	a.log.Info("programmed", "dataplane", name, "revision", rev, "full", full,
		"ops", len(res.Ops), "counts", formatCounts(res.Counts), "derive", deriveTime, "apply", apply)
	for _, op := range res.Ops {
		a.log.Debug("op", "dataplane", name, "op", op)
	}
	for _, w := range res.Warnings {
		a.log.Warn("left out of the dataplane", "dataplane", name, "reason", w)
	}
}

func formatCounts(c map[string]int) string {
	var parts []string
	for _, k := range sortedKeys(c) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, c[k]))
	}
	return strings.Join(parts, ",")
}

// once programs one cycle and checks the kernel now matches.
func (a *agent) once(ctx context.Context) error {
	snap, err := a.cycle(ctx)
	if err != nil {
		return err
	}
	if snap == nil {
		return fmt.Errorf("datastore not in sync; nothing programmed")
	}
	for _, dp := range a.dps {
		pending, err := dp.Pending(ctx, snap)
		if err != nil {
			return fmt.Errorf("%s: verify: %w", dp.Name(), err)
		}
		if len(pending) > 0 {
			return fmt.Errorf("%s: kernel does not match after programming: %d operations still pending, first: %s", dp.Name(), len(pending), pending[0])
		}
	}
	a.log.Info("kernel matches the snapshot", "node", a.node)
	return nil
}

// run loops until ctx ends: a change (coalesced), the resync timer, or a retry after failure
// triggers a cycle. Failures retry with exponential backoff up to 30 s. The loop also wakes
// idle every third of the liveness timeout, so /liveness sees it alive.
func (a *agent) run(ctx context.Context, coalesce, resync time.Duration) error {
	go a.stampChanges(ctx)
	backoff := time.Duration(0)
	resyncT := time.NewTimer(resync)
	defer resyncT.Stop()
	heartbeat := a.livenessTimeout / 3
	if heartbeat <= 0 {
		heartbeat = 20 * time.Second
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	runCycle := true
	for {
		changed := a.st.Changed()
		if runCycle {
			_, err := a.cycle(ctx)
			if err != nil {
				backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
				a.log.Warn("cycle failed; retrying", "in", backoff, "err", err)
			} else {
				backoff = 0
			}
		}
		a.health.loopIteration()
		runCycle = true
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the dataplane stays programmed")
			return nil
		case <-changed:
			a.drain(ctx, coalesce)
		case <-resyncT.C:
			for k := range a.full {
				a.full[k] = true
			}
			resyncT.Reset(resync)
		case <-retry:
		case o := <-a.reconfigure:
			a.opts.ConfigOverrides = o
			if a.deriver != nil {
				a.deriver.Close()
				a.deriver = derive.NewDeriver(a.st, a.node, a.opts)
			}
		case <-tick.C:
			// Idle: nothing to program, but the loop is alive. A pending retry keeps its
			// timer only by being re-armed, so retry now instead of waiting again.
			runCycle = backoff > 0
		}
	}
}

// keepChangeStamp puts back the change stamp of a cycle that programmed nothing, keeping
// the earlier of it and any stamp a newer change left meanwhile.
func (a *agent) keepChangeStamp(at int64) {
	if at == 0 {
		return
	}
	for {
		cur := a.firstChange.Load()
		if cur != 0 && cur <= at {
			return
		}
		if a.firstChange.CompareAndSwap(cur, at) {
			return
		}
	}
}

// stampChanges records the time of the first store change after each cycle's view.
func (a *agent) stampChanges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.st.Changed():
			a.firstChange.CompareAndSwap(0, time.Now().UnixNano())
		}
	}
}

// drain waits until no change arrived for coalesce (at most 10× coalesce in all), so a
// burst of datastore updates costs one cycle.
func (a *agent) drain(ctx context.Context, coalesce time.Duration) {
	deadline := time.After(10 * coalesce)
	for {
		select {
		case <-a.st.Changed():
		case <-time.After(coalesce):
			return
		case <-deadline:
			return
		case <-ctx.Done():
			return
		}
	}
}
