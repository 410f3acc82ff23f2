//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestSkipHostWiring(t *testing.T) {
	h := New(t)
	node, err := h.NewNode("node1")
	if err != nil {
		t.Fatal(err)
	}
	var pods []*Pod
	for i, name := range []string{"a", "b"} {
		p, err := node.NewPod(PodOptions{Name: name, SkipHostWiring: true,
			IPv4: netip.AddrFrom4([4]byte{10, 65, 0, byte(2 + i)}),
			IPv6: netip.MustParseAddr(fmt.Sprintf("fd00:65::%d", 2+i))})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	a, b := pods[0], pods[1]
	if v, err := node.Sysctl("net/ipv4/conf/" + a.HostInterface + "/proxy_arp"); err != nil || v != "0" {
		t.Errorf("proxy_arp on %s = %q (%v), want 0 with SkipHostWiring", a.HostInterface, v, err)
	}
	// Without host routes and proxy-ARP/NDP, nothing gets through.
	for _, dst := range b.Addrs() {
		a.ExpectDenied(t, ICMP, netip.AddrPortFrom(dst, 0))
	}
	// The agent's part, done by hand: now both families work.
	for _, p := range pods {
		if err := p.WireHost(); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := node.Sysctl("net/ipv4/conf/" + a.HostInterface + "/proxy_arp"); err != nil || v != "1" {
		t.Errorf("proxy_arp on %s = %q (%v), want 1 after WireHost", a.HostInterface, v, err)
	}
	for _, dst := range b.Addrs() {
		a.ExpectAllowed(t, ICMP, netip.AddrPortFrom(dst, 0))
	}
}

func TestDoRestoresNamespace(t *testing.T) {
	h := New(t)
	n, err := h.newNamespace("scratch")
	if err != nil {
		t.Fatal(err)
	}
	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	var inside vnetns.NsHandle
	if err := n.Do(func() error {
		var err error
		inside, err = vnetns.Get()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	if !inside.Equal(n.Handle()) {
		t.Errorf("Do ran in %s, want the namespace %s", inside, n.Handle())
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the panic from fn re-raised", p)
			}
		}()
		_ = n.Do(func() error { panic("boom") })
	}()
	after, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Errorf("the calling thread is now in %s, was %s", after, before)
	}
}

func TestSweep(t *testing.T) {
	RequireRoot(t)
	// A pid that surely no longer runs: a child we started and reaped.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.Process.Pid
	leftover := fmt.Sprintf("%s%d-1-leftover", TestPrefix, deadPID)
	live := fmt.Sprintf("%s%d-999-live", TestPrefix, os.Getpid())
	other := fmt.Sprintf("felistx-%d-1-other", deadPID)
	for _, name := range []string{leftover, live, other} {
		hd, err := createNamed(name)
		if err != nil {
			t.Fatal(err)
		}
		_ = hd.Close()
		t.Cleanup(func() { _ = removeNamed(name) })
	}
	// A process left running inside the leftover namespace must go with it.
	sleeper := exec.Command("ip", "netns", "exec", leftover, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- sleeper.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for !inNamespace(sleeper.Process.Pid, leftover) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	removed, err := Sweep()
	if err != nil {
		// Leftovers of other dead runs may resist (see removeNamed); ours are checked below.
		t.Logf("Sweep: %v", err)
	}
	// (Another test process sweeping at the same moment may have removed it first, so only
	// its absence is checked below.)
	for _, name := range []string{live, other} {
		if contains(removed, name) {
			t.Errorf("Sweep removed %s, which it must leave alone", name)
		}
		if _, err := os.Stat(RunDir + "/" + name); err != nil {
			t.Errorf("%s is gone after Sweep: %v", name, err)
		}
	}
	if _, err := os.Stat(RunDir + "/" + leftover); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Sweep (stat: %v)", leftover, err)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		_ = sleeper.Process.Kill()
		t.Errorf("the process inside the swept namespace was not killed")
	}
}

// inNamespace reports whether pid's network namespace is the named one.
func inNamespace(pid int, name string) bool {
	a, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return false
	}
	b, err := os.Stat(RunDir + "/" + name)
	return err == nil && os.SameFile(a, b)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestCleanupAfterPanic runs a child test that builds a node, a pod, a listener and a process
// and then panics; afterwards nothing of it may remain.
func TestCleanupAfterPanic(t *testing.T) {
	if os.Getenv("FELIS_NETNS_PANIC_CHILD") == "1" {
		h := New(t)
		node, err := h.NewNode("node1")
		if err != nil {
			t.Fatal(err)
		}
		pod, err := node.NewPod(PodOptions{Name: "p", IPv4: netip.MustParseAddr("10.65.0.2")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pod.Listen(TCP, 80); err != nil {
			t.Fatal(err)
		}
		proc, err := pod.Start(context.Background(), "sleep", "60")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("PREFIX=%s PID=%d\n", h.Prefix(), proc.Cmd.Process.Pid)
		panic("deliberate panic in a netns test")
	}
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCleanupAfterPanic$", "-test.v")
	cmd.Env = append(os.Environ(), "FELIS_NETNS_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "deliberate panic") {
		t.Fatalf("child test should have panicked; err=%v output:\n%s", err, out)
	}
	m := regexp.MustCompile(`PREFIX=(\S+) PID=(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("child did not report its prefix; output:\n%s", out)
	}
	if left := namespacesWithPrefix(t, m[1]+"-"); len(left) != 0 {
		t.Errorf("namespaces left after the child panicked: %v\nchild output:\n%s", left, out)
	}
	pid, _ := strconv.Atoi(m[2])
	if processExists(pid) {
		t.Errorf("process %d started by the child still runs", pid)
	}
}

// TestRemoveHidden reproduces, inside a private mount namespace (so nobody else's view of
// RunDir changes), what a concurrent `ip netns add` does when RunDir is not a mount point yet:
// bind-mount RunDir over itself, hiding our namespace mount. Close must still remove the name.
func TestRemoveHidden(t *testing.T) {
	if os.Getenv("FELIS_NETNS_HIDDEN_CHILD") == "1" {
		h, err := NewHarness(Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := h.newNamespace("hidden")
		if err != nil {
			t.Fatal(err)
		}
		// In this private mount namespace only: a second layer over RunDir, as `ip netns add` makes.
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(n.Path()); err == nil || !errors.Is(err, unix.EBUSY) {
			t.Fatalf("plain remove of a hidden name: got %v, want EBUSY (the test does not reproduce the problem)", err)
		}
		if err := h.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := os.Stat(n.Path()); !os.IsNotExist(err) {
			t.Fatalf("%s still exists after Close (stat: %v)", n.Path(), err)
		}
		fmt.Println("HIDDEN-OK")
		return
	}
	RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skipf("skipping: needs unshare(1) from util-linux to make a private mount namespace")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private",
		os.Args[0], "-test.run=^TestRemoveHidden$", "-test.v")
	cmd.Env = append(os.Environ(), "FELIS_NETNS_HIDDEN_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "HIDDEN-OK") {
		t.Fatalf("child failed: %v\n%s", err, out)
	}
}
