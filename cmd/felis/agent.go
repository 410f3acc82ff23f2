package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

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

// routingDataplane builds the netlink applier (routes, VXLAN, interface settings), when
// that applier is built in.
var routingDataplane func(node string) (appliers.Dataplane, error)

type agentFlags struct {
	datastore string
	node      string
	dataplane string
	once      bool
	noRouting bool
	resync    time.Duration
	coalesce  time.Duration
	logLevel  string
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

With --once it programs one cycle and exits 0 only if the kernel then matches the snapshot.`,
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
	_ = cmd.MarkFlagRequired("node")
	return cmd
}

func runAgent(cmd *cobra.Command, f *agentFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", f.logLevel, err)
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))

	build, ok := policyDataplanes[f.dataplane]
	if !ok {
		return fmt.Errorf("--dataplane %q: not available (have: %s)", f.dataplane, strings.Join(sortedKeys(policyDataplanes), ", "))
	}
	policy, err := build()
	if err != nil {
		return fmt.Errorf("--dataplane %s: %w", f.dataplane, err)
	}
	dps := []appliers.Dataplane{policy}
	if !f.noRouting && routingDataplane != nil {
		r, err := routingDataplane(f.node)
		if err != nil {
			return fmt.Errorf("routing dataplane: %w", err)
		}
		dps = append(dps, r)
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	src, err := datastore.Open(f.datastore)
	if err != nil {
		return err
	}
	st := store.New()
	problems, err := src.Load(ctx, st)
	if err != nil {
		return fmt.Errorf("--datastore %s: %w", f.datastore, err)
	}
	reportProblems(log, problems)

	a := &agent{log: log, node: f.node, dps: dps, st: st, full: map[string]bool{}, deriver: derive.NewDeriver(st, f.node, derive.Options{})}
	defer a.deriver.Close()
	for _, dp := range dps {
		a.full[dp.Name()] = true // the first sync of every dataplane reads the kernel
	}
	if f.once {
		return a.once(ctx)
	}
	go func() {
		if err := src.Watch(ctx, st, func(p datastore.Problems) { reportProblems(log, p) }); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("datastore watch stopped", "err", err)
			stop()
		}
	}()
	return a.run(ctx, f.coalesce, f.resync)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func reportProblems(log *slog.Logger, ps datastore.Problems) {
	for _, p := range ps {
		log.Warn("invalid resource left out", "problem", p.String())
	}
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
}

// cycle derives and syncs once. It never runs before the store is in sync.
func (a *agent) cycle(ctx context.Context) (*snapshot.Snapshot, error) {
	// The in-sync mark is read with the view, so a view taken before the last source synced
	// can never be programmed.
	view := a.st.View()
	if !view.InSync() {
		a.log.Info("waiting for every datastore source to be in sync; nothing programmed")
		return nil, nil
	}
	start := time.Now()
	var snap *snapshot.Snapshot
	var err error
	if a.deriver != nil {
		snap, err = a.deriver.Derive(view)
	} else {
		snap, err = derive.Derive(view, a.node, derive.Options{})
	}
	if err != nil {
		return nil, fmt.Errorf("derive: %w", err)
	}
	deriveTime := time.Since(start)
	var errs []error
	for _, dp := range a.dps {
		t0 := time.Now()
		full := a.full[dp.Name()]
		res, err := dp.Sync(ctx, snap, full)
		if err != nil {
			a.full[dp.Name()] = true
			errs = append(errs, fmt.Errorf("%s: %w", dp.Name(), err))
			a.log.Error("dataplane sync failed; the previous state stays in place", "dataplane", dp.Name(), "err", err)
			continue
		}
		a.full[dp.Name()] = false
		a.log.Info("programmed", "dataplane", dp.Name(), "revision", view.Revision(), "full", full,
			"ops", len(res.Ops), "counts", formatCounts(res.Counts), "derive", deriveTime, "apply", time.Since(t0))
		for _, op := range res.Ops {
			a.log.Debug("op", "dataplane", dp.Name(), "op", op)
		}
	}
	return snap, errors.Join(errs...)
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
// triggers a cycle. Failures retry with exponential backoff up to 30 s.
func (a *agent) run(ctx context.Context, coalesce, resync time.Duration) error {
	backoff := time.Duration(0)
	resyncT := time.NewTimer(resync)
	defer resyncT.Stop()
	for {
		changed := a.st.Changed()
		_, err := a.cycle(ctx)
		if err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 30*time.Second)
			a.log.Warn("cycle failed; retrying", "in", backoff, "err", err)
		} else {
			backoff = 0
		}
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
