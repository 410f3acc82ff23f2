//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestPrefix begins the name of every namespace a test harness creates
// ("felist-<pid>-<seq>-<label>"); Sweep removes only such names, and only when <pid> is gone.
const TestPrefix = "felist-"

// RunDir is where named network namespaces are bind-mounted, as iproute2 does, so that
// `ip netns exec NAME` sees them.
const RunDir = "/var/run/netns"

// DefaultProbeTimeout bounds one traffic probe unless Options.ProbeTimeout says otherwise.
const DefaultProbeTimeout = 2 * time.Second

// TB is the part of testing.TB (and of Ginkgo's GinkgoT()) the harness uses.
type TB interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}

// Options configure a Harness; the zero value suits tests.
type Options struct {
	// Prefix replaces the generated "felist-<pid>-<seq>" name prefix, for namespaces that must
	// outlive the process (the felis-netns CLI). Sweep never removes those; RemoveAll does.
	Prefix string
	// ProbeTimeout bounds each TCP/UDP/ICMP probe; zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration
}

// Harness owns the namespaces, processes and listeners of one test and removes them on Close.
type Harness struct {
	prefix       string
	probeTimeout time.Duration

	mu         sync.Mutex
	closed     bool
	namespaces []*Namespace    // creation order; removed in reverse
	cleanups   []func() error  // listeners and processes; run in reverse before namespaces go
	labels     map[string]bool // labels in use, to fail early on duplicates
}

var (
	harnessSeq atomic.Int64
	sweepOnce  sync.Once
	runDirOnce sync.Once
	runDirErr  error
)

// prepareRunDir makes RunDir a shared mount point of its own, as `ip netns add` does, before any
// namespace is bind-mounted there. Otherwise a later `ip netns add` (by anyone) bind-mounts
// RunDir over itself, hiding our mounts beneath: their names could then no longer be removed.
func prepareRunDir() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("netns: create %s: %w", RunDir, err)
	}
	err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("netns: mount --rbind %s %s: %w", RunDir, RunDir, err)
		}
		err = unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("netns: mount --make-rshared %s: %w", RunDir, err)
	}
	return nil
}

// NewHarness returns an empty harness. The first call in a process also sweeps leftovers of
// crashed earlier runs (see Sweep). It fails with ErrNotRoot when not running as root.
func NewHarness(opts Options) (*Harness, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	runDirOnce.Do(func() { runDirErr = prepareRunDir() })
	if runDirErr != nil {
		return nil, runDirErr
	}
	sweepOnce.Do(func() { _, _ = Sweep() })
	h := &Harness{
		prefix:       opts.Prefix,
		probeTimeout: opts.ProbeTimeout,
		labels:       map[string]bool{},
	}
	if h.prefix == "" {
		h.prefix = fmt.Sprintf("%s%d-%d", TestPrefix, os.Getpid(), harnessSeq.Add(1))
	}
	if h.probeTimeout <= 0 {
		h.probeTimeout = DefaultProbeTimeout
	}
	return h, nil
}

// New returns a harness for a test: it skips the test with a clear message when not root,
// fails it on any other error, and registers Close with t.Cleanup so everything is removed
// even when the test fails or panics.
func New(t TB) *Harness {
	t.Helper()
	RequireRoot(t)
	h, err := NewHarness(Options{})
	if err != nil {
		t.Fatalf("netns harness: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("netns harness cleanup: %v", err)
		}
	})
	return h
}

// RequireRoot skips the test unless the process runs as root.
func RequireRoot(t TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("skipping: real-packet tests create network namespaces and need root (run the test command as root, e.g. sudo -E go test ./tools/netns/)")
	}
}

// Prefix is the name prefix of every namespace this harness creates.
func (h *Harness) Prefix() string { return h.prefix }

// Namespaces lists the full names of the namespaces this harness currently owns.
func (h *Harness) Namespaces() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.namespaces))
	for _, n := range h.namespaces {
		names = append(names, n.Name)
	}
	return names
}

// addCleanup registers fn to run on Close, before namespaces are removed.
func (h *Harness) addCleanup(fn func() error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	h.cleanups = append(h.cleanups, fn)
	return nil
}

// Close stops every process and listener the harness started and removes every namespace it
// created (which removes their links and routes with them). It is safe to call more than once;
// it returns every error it met, joined.
func (h *Harness) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	cleanups, namespaces := h.cleanups, h.namespaces
	h.cleanups, h.namespaces = nil, nil
	h.mu.Unlock()

	var errs []error
	for i := len(cleanups) - 1; i >= 0; i-- {
		if err := cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(namespaces) - 1; i >= 0; i-- {
		if err := namespaces[i].remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newNamespace creates the named namespace prefix-label with lo up and DAD off (addresses in
// these point-to-point test networks are usable at once, as Calico's CNI arranges for pods).
func (h *Harness) newNamespace(label string) (*Namespace, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	if h.labels[label] {
		h.mu.Unlock()
		return nil, fmt.Errorf("netns: namespace %q already exists in this harness", label)
	}
	h.labels[label] = true
	h.mu.Unlock()

	name := h.prefix + "-" + label
	handle, err := createNamed(name)
	if err != nil {
		return nil, fmt.Errorf("netns: create namespace %s: %w", name, err)
	}
	n := &Namespace{Name: name, h: h, handle: handle}
	h.mu.Lock()
	h.namespaces = append(h.namespaces, n)
	h.mu.Unlock()

	n.nl, err = netlink.NewHandleAt(handle)
	if err != nil {
		return nil, fmt.Errorf("netns: netlink handle in %s: %w", name, err)
	}
	lo, err := n.nl.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("netns: %s: find lo: %w", name, err)
	}
	if err := n.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("netns: %s: set lo up: %w", name, err)
	}
	if err := n.SetSysctls(map[string]string{
		"net/ipv6/conf/all/disable_ipv6":     "0",
		"net/ipv6/conf/default/disable_ipv6": "0",
		"net/ipv6/conf/all/accept_dad":       "0",
		"net/ipv6/conf/default/accept_dad":   "0",
		// IPv6 starts an interface's addresses (joining their solicited-node groups) after a
		// random delay of up to router_solicitation_delay once the link comes up: the first neighbour
		// solicitations of a fresh pod would then be lost for up to a second.
		"net/ipv6/conf/all/router_solicitation_delay":     "0",
		"net/ipv6/conf/default/router_solicitation_delay": "0",
	}); err != nil {
		return nil, err
	}
	return n, nil
}

// createNamed creates and bind-mounts a new network namespace on a dedicated, locked OS thread
// and switches that thread back; if it cannot switch back the thread is left locked so that Go
// discards it instead of reusing a thread in the wrong namespace.
func createNamed(name string) (vnetns.NsHandle, error) {
	type result struct {
		handle vnetns.NsHandle
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{vnetns.None(), fmt.Errorf("read current namespace: %w", err)}
			return
		}
		defer orig.Close()
		handle, err := vnetns.NewNamed(name)
		if rerr := vnetns.Set(orig); rerr != nil {
			if handle.IsOpen() {
				_ = handle.Close()
			}
			ch <- result{vnetns.None(), fmt.Errorf("switch back to original namespace: %w", rerr)}
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- result{handle, err}
	}()
	r := <-ch
	return r.handle, r.err
}

// Attach opens an existing named namespace (for example one a felis-netns "up" created) so the
// harness can run code, probes and listeners in it. Close releases it but never deletes it.
func (h *Harness) Attach(name string) (*Namespace, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	handle, err := vnetns.GetFromPath(filepath.Join(RunDir, name))
	if err != nil {
		return nil, fmt.Errorf("netns: open namespace %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(handle)
	if err != nil {
		_ = handle.Close()
		return nil, fmt.Errorf("netns: netlink handle in %s: %w", name, err)
	}
	n := &Namespace{Name: name, h: h, handle: handle, nl: nl}
	if err := h.addCleanup(func() error {
		nl.Close()
		return handle.Close()
	}); err != nil {
		nl.Close()
		_ = handle.Close()
		return nil, err
	}
	return n, nil
}
