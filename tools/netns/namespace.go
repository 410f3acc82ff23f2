//go:build linux

package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is one named network namespace owned by a Harness.
type Namespace struct {
	// Name is the full name under RunDir, usable with `ip netns exec`.
	Name string

	h      *Harness
	handle vnetns.NsHandle
	nl     *netlink.Handle
}

// Netlink returns a netlink handle bound to this namespace (no thread switching needed).
func (n *Namespace) Netlink() *netlink.Handle { return n.nl }

// Handle returns the open namespace handle (valid until the harness closes).
func (n *Namespace) Handle() vnetns.NsHandle { return n.handle }

// Path is the bind-mount path of the namespace.
func (n *Namespace) Path() string { return filepath.Join(RunDir, n.Name) }

// Do runs fn with the calling code's view switched into the namespace: on a dedicated goroutine
// whose OS thread is locked and switched, then switched back. Sockets fn opens stay in the
// namespace after Do returns. fn must not call t.FailNow (it runs on another goroutine); a panic
// in fn is re-raised in the caller.
func (n *Namespace) Do(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("netns: read current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := vnetns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("netns: enter %s: %w", n.Name, err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.value = true, p
				}
			}()
			r.err = fn()
		}()
		if err := vnetns.Set(orig); err != nil {
			if r.err == nil {
				r.err = fmt.Errorf("netns: leave %s: %w", n.Name, err)
			}
			ch <- r
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		ch <- r
	}()
	r := <-ch
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// SetSysctls writes /proc/sys/KEY = VALUE inside the namespace for each entry (keys like
// "net/ipv4/ip_forward"); only per-namespace net sysctls make sense here.
func (n *Namespace) SetSysctls(values map[string]string) error {
	return n.Do(func() error {
		for key, value := range values {
			if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
				return fmt.Errorf("netns: %s: sysctl %s=%s: %w", n.Name, strings.ReplaceAll(key, "/", "."), value, err)
			}
		}
		return nil
	})
}

// Sysctl reads /proc/sys/KEY inside the namespace.
func (n *Namespace) Sysctl(key string) (string, error) {
	var value string
	err := n.Do(func() error {
		b, err := os.ReadFile(filepath.Join("/proc/sys", key))
		value = strings.TrimSpace(string(b))
		return err
	})
	return value, err
}

// AddRoute adds a route to dst via the gateway via (which must be reachable on a connected
// subnet of the namespace), in the main table.
func (n *Namespace) AddRoute(dst netip.Prefix, via netip.Addr) error {
	r := &netlink.Route{Dst: ipNet(dst), Gw: via.AsSlice()}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netns: %s: ip route add %s via %s: %w", n.Name, dst, via, err)
	}
	return nil
}

// Command builds `ip netns exec NAME name args...`; the caller runs it and owns the process
// (prefer Start, which the harness stops on Close).
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Exec runs name with args inside the namespace to completion and returns its combined
// output; a failure's error includes the command and its output.
func (n *Namespace) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netns: %s: %s %s: %w\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// Process is a long-running command started in a namespace; the harness stops it on Close.
type Process struct {
	// Cmd is the running command.
	Cmd *exec.Cmd

	out      *lockedBuffer
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start starts name with args inside the namespace, capturing stdout and stderr together
// (see Output). The process is killed if the test process dies, and stopped on Close.
func (n *Namespace) Start(ctx context.Context, name string, args ...string) (*Process, error) {
	cmd := n.Command(ctx, name, args...)
	p := &Process{Cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := n.h.addCleanup(p.Stop); err != nil {
		return nil, err
	}
	// Pdeathsig fires when the forking OS thread ends, not the process: fork from a locked
	// thread that lives exactly as long as the child.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("netns: %s: start %s: %w", n.Name, name, err)
	}
	return p, nil
}

// Output returns everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.waitErr
}

// Stop sends SIGTERM to the process group, then SIGKILL after 5 seconds, and waits for it. It
// returns nil when the process is gone, whatever its exit status.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		if p.Cmd.Process == nil {
			return
		}
		select {
		case <-p.done:
			return
		default:
		}
		pgid := -p.Cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				p.stopErr = fmt.Errorf("netns: process %d (%s) did not exit after SIGKILL", p.Cmd.Process.Pid, p.Cmd.String())
			}
		}
	})
	return p.stopErr
}

// lockedBuffer is a bytes.Buffer safe for a writing process and a reading test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// remove closes the handles, kills any process still inside and deletes the named namespace.
func (n *Namespace) remove() error {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.handle.IsOpen() {
		_ = n.handle.Close()
	}
	return removeNamed(n.Name)
}

// removeNamed kills every process whose network namespace is RunDir/name and unmounts and
// deletes the name. A missing name is not an error.
func removeNamed(name string) error {
	path := filepath.Join(RunDir, name)
	var errs []error
	if err := killProcessesIn(path); err != nil {
		errs = append(errs, err)
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("netns: unmount %s: %w", path, err))
	}
	err := os.Remove(path)
	if errors.Is(err, unix.EBUSY) {
		err = removeHidden(path)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netns: remove %s: %w", path, err))
	}
	return errors.Join(errs...)
}

// removeHidden removes a name whose bind mount is hidden under a later bind mount of RunDir
// over itself (what `ip netns add` does when RunDir is not yet a mount point): unlink says
// EBUSY because the name is still a mount point beneath. On a throwaway thread it enters a
// private copy of the mount namespace, peels off the copies of both mounts there, and unlinks
// the name; the kernel then detaches the hidden mount in every namespace (Linux >= 3.18).
// Nothing else is unmounted outside that private copy.
func removeHidden(path string) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in its own mount namespace
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			ch <- fmt.Errorf("netns: remove %s: unshare mount namespace: %w", path, err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			ch <- fmt.Errorf("netns: remove %s: make private copy: %w", path, err)
			return
		}
		for range 8 { // the overlays of RunDir, then the netns mounts of path, in this copy only
			if unix.Unmount(RunDir, unix.MNT_DETACH) != nil {
				break
			}
		}
		for range 8 {
			if unix.Unmount(path, unix.MNT_DETACH) != nil {
				break
			}
		}
		if err := os.Remove(path); err != nil {
			ch <- fmt.Errorf("netns: remove %s (hidden under a bind mount of %s): %w", path, RunDir, err)
			return
		}
		ch <- nil
	}()
	return <-ch
}

// killProcessesIn SIGKILLs every process (other than this one) living in the network namespace
// bind-mounted at path, so that nothing keeps a deleted test namespace alive.
func killProcessesIn(path string) error {
	var target unix.Stat_t
	if err := unix.Stat(path, &target); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("netns: stat %s: %w", path, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("netns: list processes: %w", err)
	}
	self := os.Getpid()
	var errs []error
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self || fmt.Sprint(pid) != e.Name() {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue // exited, or a kernel thread
		}
		if st.Dev == target.Dev && st.Ino == target.Ino {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("netns: kill process %d in %s: %w", pid, path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Sweep removes namespaces left behind by test harnesses of processes that no longer exist:
// names "felist-<pid>-..." under RunDir whose <pid> is not running. Namespaces of running
// processes and every other name are left alone. It returns the names it removed.
func Sweep() ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: sweep: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		pid, ok := testOwnerPID(e.Name())
		if !ok || processExists(pid) {
			continue
		}
		if err := removeNamed(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// RemoveAll removes every namespace under RunDir named prefix + "-" + something, with the
// processes inside (for namespaces made with Options.Prefix, like the CLI's). It refuses an
// empty prefix. It returns the names it removed.
func RemoveAll(prefix string) ([]string, error) {
	if prefix == "" || strings.ContainsRune(prefix, '/') {
		return nil, fmt.Errorf("netns: RemoveAll: invalid prefix %q", prefix)
	}
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("netns: list %s: %w", RunDir, err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix+"-") {
			continue
		}
		if err := removeNamed(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// testOwnerPID parses the pid out of a test namespace name "felist-<pid>-<seq>-<label>".
func testOwnerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, TestPrefix)
	if !ok {
		return 0, false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok || pidText == "" {
		return 0, false
	}
	pid := 0
	for _, c := range pidText {
		if c < '0' || c > '9' || pid > 1<<30 {
			return 0, false
		}
		pid = pid*10 + int(c-'0')
	}
	return pid, pid > 0
}

// processExists reports whether a process with this pid is running (or exists but is not ours
// to signal).
func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// ipNet converts a prefix to the net.IPNet netlink wants, keeping the host bits.
func ipNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

// waitOperUp polls until the named link reports operational state UP, for at most five seconds:
// a fresh veth or bridge port drops packets until the kernel's link watcher has marked it up,
// which can take up to a second.
func (n *Namespace) waitOperUp(name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := n.nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("netns: %s: find %s: %w", n.Name, name, err)
		}
		if link.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: %s: %s is still %s after 5s", n.Name, name, link.Attrs().OperState)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitIPv6Ready polls until the named link has a link-local IPv6 address and no tentative one,
// for at most five seconds: until then neighbour discovery on it can lose its first exchange.
func (n *Namespace) waitIPv6Ready(name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := n.nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("netns: %s: find %s: %w", n.Name, name, err)
		}
		addrs, err := n.nl.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("netns: %s: list addresses of %s: %w", n.Name, name, err)
		}
		linkLocal, tentative := false, false
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				linkLocal = true
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = true
			}
		}
		if linkLocal && !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netns: %s: IPv6 on %s not ready after 5s (addresses %v)", n.Name, name, addrs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
