//go:build linux

package bpf

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/felis-dev/felis/snapshot"
)

// TCP flags.
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// ct.h's flow flags.
const (
	ctFinFwd = 2
	ctFinRev = 4
	ctRST    = 8
)

// tcpFrame is an IPv4 TCP segment with the given flags.
func tcpFrame(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	h := l4ports(6, sport, dport)
	h.body[13] = flags
	return v4frag(src, dst, 6, 1, 0, false, h.body)
}

// ctStateSnapshot: the endpoint 10.0.0.1 may send anything; it accepts only sources in s:a
// (10.0.0.2, 10.0.0.3).
func ctStateSnapshot() *snapshot.Snapshot {
	s := syncSnapshot()
	s.Profiles = []snapshot.Profile{{ID: "all", Outbound: []snapshot.Rule{{Action: snapshot.Allow}}}}
	s.Endpoints[0].Egress = snapshot.Direction{Profiles: []string{"all"}}
	return s
}

var (
	ctEP     = netip.MustParseAddr("10.0.0.1")
	ctPeer   = netip.MustParseAddr("10.9.9.9") // not allowed in
	ctClient = netip.MustParseAddr("10.0.0.2") // allowed in
)

// flowKey is the conntrack key of a flow the endpoint opened (TC ingress of its veth, ifindex
// 1 under BPF_PROG_TEST_RUN); for ICMP echo, the ports are the echo ID.
func flowKey(proto uint8, src, dst netip.Addr, sport, dport uint16, dir uint8) policyCtKey {
	k := policyCtKey{Ifindex: 1, Dir: dir, Proto: proto, Family: 4, Sport: sport, Dport: dport}
	if proto == 1 {
		k.Icmp = 8
	}
	s, d := src.As4(), dst.As4()
	copy(k.Src[:], s[:])
	copy(k.Dst[:], d[:])
	return k
}

func flowOut(proto uint8, sport, dport uint16) policyCtKey {
	return flowKey(proto, ctEP, ctPeer, sport, dport, 1)
}

func ctFlags(t *testing.T, d *Dataplane, k policyCtKey) uint32 {
	t.Helper()
	var v policyCtVal
	if err := d.CTMap().Lookup(&k, &v); err != nil {
		t.Fatalf("conntrack entry %+v: %v", k, err)
	}
	return v.Flags
}

// TestTCPState: nf_conntrack's TCP rules as the netfilter dataplanes apply them. Flag
// combinations it rejects are dropped with or without a flow; with no flow only a SYN or a
// mid-flow ACK (loose pickup) reaches policy, and a SYN-ACK, FIN or RST is dropped; the
// handshake establishes the flow; FINs both ways and RST are recorded; a SYN reopens a closed
// flow through policy.
func TestTCPState(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, ctStateSnapshot(), true)
	out := func(sport uint16, flags uint8) []byte { return tcpFrame(ctEP, ctPeer, sport, 443, flags) }
	back := func(sport uint16, flags uint8) []byte { return tcpFrame(ctPeer, ctEP, 443, sport, flags) }

	type step struct {
		name  string
		prog  *ebpf.Program
		frame []byte
		want  uint32
		port  uint16 // the endpoint's port of the flow whose flags are checked after the step (0: none)
		flags uint32
	}
	const n = 0
	steps := []step{
		{"NULL scan out (egress allows everything)", fromWEP, out(40000, 0), tcShot, n, 0},
		{"SYN+FIN out", fromWEP, out(40000, tcpSYN|tcpFIN), tcShot, n, 0},
		{"FIN without ACK out", fromWEP, out(40000, tcpFIN), tcShot, n, 0},
		{"SYN+RST out", fromWEP, out(40000, tcpSYN|tcpRST), tcShot, n, 0},
		{"FIN+ACK out, no flow", fromWEP, out(40000, tcpFIN|tcpACK), tcShot, n, 0},
		{"RST out, no flow", fromWEP, out(40000, tcpRST), tcShot, n, 0},
		{"RST+ACK out, no flow", fromWEP, out(40000, tcpRST|tcpACK), tcShot, n, 0},
		{"SYN+ACK out, no flow", fromWEP, out(40000, tcpSYN|tcpACK), tcShot, n, 0},

		{"SYN out", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},
		{"SYN retransmitted", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},
		{"SYN+ACK back", toWEP, back(40000, tcpSYN|tcpACK), tcOK, 40000, ctEstablished},
		{"ACK out", fromWEP, out(40000, tcpACK), tcOK, 40000, ctEstablished},
		{"PSH+ACK back", toWEP, back(40000, tcpPSH|tcpACK), tcOK, 40000, ctEstablished},
		{"NULL back on the flow", toWEP, back(40000, 0), tcShot, 40000, ctEstablished},
		{"FIN+ACK out", fromWEP, out(40000, tcpFIN|tcpACK), tcOK, 40000, ctEstablished | ctFinFwd},
		{"FIN+ACK back", toWEP, back(40000, tcpFIN|tcpACK), tcOK, 40000, ctEstablished | ctFinFwd | ctFinRev},
		{"last ACK out", fromWEP, out(40000, tcpACK), tcOK, 40000, ctEstablished | ctFinFwd | ctFinRev},
		{"SYN out reopens the closed flow (policy, new entry)", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},
		{"SYN+ACK back", toWEP, back(40000, tcpSYN|tcpACK), tcOK, 40000, ctEstablished},
		{"RST back", toWEP, back(40000, tcpRST), tcOK, 40000, ctEstablished | ctRST},
		{"SYN out after the RST (policy, new entry)", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},

		// Loose pickup: a mid-flow ACK with no flow goes to policy and, allowed, is tracked
		// as established.
		{"ACK out, no flow (picked up)", fromWEP, out(40001, tcpACK), tcOK, 40001, ctEstablished},
		{"ACK back", toWEP, back(40001, tcpACK), tcOK, 40001, ctEstablished},
		{"ACK in from a source policy denies, no flow", toWEP, tcpFrame(ctPeer, ctEP, 5000, 80, tcpACK), tcShot, n, 0},
		{"ACK in from a source policy allows, no flow", toWEP, tcpFrame(ctClient, ctEP, 5000, 80, tcpACK), tcOK, n, 0},
		{"its reply", fromWEP, tcpFrame(ctEP, ctClient, 80, 5000, tcpPSH|tcpACK), tcOK, n, 0},
	}
	for _, st := range steps {
		if got := runFrame(t, st.prog, st.frame); got != st.want {
			t.Errorf("%s: verdict %d, want %d", st.name, got, st.want)
			continue
		}
		if st.port != 0 {
			if got := ctFlags(t, d, flowOut(6, st.port, 443)); got != st.flags {
				t.Errorf("%s: flow flags %#x, want %#x", st.name, got, st.flags)
			}
		}
	}
}

// monotonicNow is bpf_ktime_get_ns's clock.
func monotonicNow(t *testing.T) uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// age rewrites a flow's times to idle and age before now (unsigned arithmetic wraps like the
// program's).
func age(t *testing.T, d *Dataplane, k policyCtKey, idle, created time.Duration) {
	t.Helper()
	var v policyCtVal
	if err := d.CTMap().Lookup(&k, &v); err != nil {
		t.Fatalf("conntrack entry %+v: %v", k, err)
	}
	now := monotonicNow(t)
	v.LastSeen, v.Created = now-uint64(idle), now-uint64(created)
	if err := d.CTMap().Update(&k, &v, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
}

// TestConntrackTimeouts: each kind of flow expires after Felix's default idle timeout for
// its state (checked one second either side by ageing the entry), and no flow expires within
// the creation grace period. An expired flow's next packet is new again: its reply meets
// the ingress policy, which denies the peer (for TCP a reply that cannot open a flow is
// dropped as invalid).
func TestConntrackTimeouts(t *testing.T) {
	d, _ := openTest(t)
	toWEP, fromWEP := d.Programs()
	mustSync(t, d, ctStateSnapshot(), true)
	icmp := func(src, dst netip.Addr, typ uint8) []byte {
		return v4frag(src, dst, 1, 1, 0, false, []byte{typ, 0, 0, 0, 0x00, 0x07, 0, 1})
	}
	gre := func(src, dst netip.Addr) []byte { return v4frag(src, dst, 47, 1, 0, false, make([]byte, 8)) }
	udp := func(src, dst netip.Addr, sport, dport uint16) []byte {
		return v4frag(src, dst, 17, 1, 0, false, l4ports(17, sport, dport).body)
	}
	const s = time.Second
	cases := []struct {
		name    string
		open    [][2][]byte // frames (fromWEP, then toWEP if any) that put the flow in its state
		key     policyCtKey
		reply   []byte
		timeout time.Duration
		created time.Duration // 0: long ago
	}{
		{"TCP SYN sent", [][2][]byte{{tcpFrame(ctEP, ctPeer, 41000, 443, tcpSYN)}},
			flowOut(6, 41000, 443), tcpFrame(ctPeer, ctEP, 443, 41000, tcpSYN|tcpACK), 20 * s, 0},
		{"TCP established", [][2][]byte{{tcpFrame(ctEP, ctPeer, 41001, 443, tcpSYN), tcpFrame(ctPeer, ctEP, 443, 41001, tcpSYN|tcpACK)}},
			flowOut(6, 41001, 443), tcpFrame(ctPeer, ctEP, 443, 41001, tcpACK), time.Hour, 0},
		{"TCP FINs seen", [][2][]byte{
			{tcpFrame(ctEP, ctPeer, 41002, 443, tcpSYN), tcpFrame(ctPeer, ctEP, 443, 41002, tcpSYN|tcpACK)},
			{tcpFrame(ctEP, ctPeer, 41002, 443, tcpFIN|tcpACK), tcpFrame(ctPeer, ctEP, 443, 41002, tcpFIN|tcpACK)}},
			flowOut(6, 41002, 443), tcpFrame(ctPeer, ctEP, 443, 41002, tcpACK), 30 * s, 0},
		{"TCP RST seen", [][2][]byte{
			{tcpFrame(ctEP, ctPeer, 41003, 443, tcpSYN), tcpFrame(ctPeer, ctEP, 443, 41003, tcpSYN|tcpACK)},
			{tcpFrame(ctEP, ctPeer, 41003, 443, tcpRST)}},
			flowOut(6, 41003, 443), tcpFrame(ctPeer, ctEP, 443, 41003, tcpACK), 40 * s, 0},
		{"UDP", [][2][]byte{{udp(ctEP, ctPeer, 41004, 53)}}, flowOut(17, 41004, 53), udp(ctPeer, ctEP, 53, 41004), 60 * s, 0},
		{"ICMP echo", [][2][]byte{{icmp(ctEP, ctPeer, 8)}}, flowOut(1, 7, 7), icmp(ctPeer, ctEP, 0), 5 * s, 0},
		{"ICMP echo within the creation grace period", [][2][]byte{{icmp(ctEP, ctPeer, 8)}}, flowOut(1, 7, 7), icmp(ctPeer, ctEP, 0), 9 * s, 9*s + s/2},
		{"generic (GRE)", [][2][]byte{{gre(ctEP, ctPeer)}}, flowOut(47, 0, 0), gre(ctPeer, ctEP), 10 * time.Minute, 0},
	}
	for _, c := range cases {
		created := c.created
		if created == 0 {
			created = 2 * time.Hour
		}
		// Each check starts from a fresh flow: a passing reply may move it on (a SYN-ACK
		// establishes it).
		check := func(idle time.Duration, want uint32) {
			clearCT(t, d.CTMap())
			for _, pair := range c.open {
				if got := runFrame(t, fromWEP, pair[0]); got != tcOK {
					t.Fatalf("%s: opening packet out: %d", c.name, got)
				}
				if pair[1] != nil {
					if got := runFrame(t, toWEP, pair[1]); got != tcOK {
						t.Fatalf("%s: opening packet back: %d", c.name, got)
					}
				}
			}
			age(t, d, c.key, idle, created)
			if got := runFrame(t, toWEP, c.reply); got != want {
				t.Errorf("%s: reply after %v idle (created %v ago): %d, want %d", c.name, idle, created, got, want)
			}
		}
		check(c.timeout-s, tcOK)
		if c.created == 0 { // (inside the grace period only the first check applies)
			check(c.timeout+s, tcShot)
		}
	}
	// Past the grace period the ICMP timeout applies again.
	clearCT(t, d.CTMap())
	runFrame(t, fromWEP, icmp(ctEP, ctPeer, 8))
	age(t, d, flowOut(1, 7, 7), 6*s, 11*s)
	if got := runFrame(t, toWEP, icmp(ctPeer, ctEP, 0)); got != tcShot {
		t.Errorf("ICMP echo idle 6 s, created 11 s ago: %d, want drop", got)
	}
}

// TestConntrackMigratesV1: a conntrack map pinned by an older agent (fct_v1, last-seen times
// only) is carried into fct_v2 as established flows and its pin removed, so replies of flows
// opened before an upgrade still pass.
func TestConntrackMigratesV1(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (bpf maps)")
	}
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	pins := filepath.Join(dir, "felis")
	if err := os.MkdirAll(pins, 0o700); err != nil {
		t.Fatal(err)
	}
	spec, err := loadPolicy()
	if err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "fct_v1", Type: ebpf.LRUHash, KeySize: spec.Maps["fct_v2"].KeySize, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	k := flowOut(6, 42000, 443)
	if err := old.Put(&k, monotonicNow(t)); err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(pins, "fct_v1")); err != nil {
		t.Fatal(err)
	}
	old.Close()

	d := openAt(t, dir)
	if _, err := os.Stat(filepath.Join(pins, "fct_v1")); !os.IsNotExist(err) {
		t.Errorf("old conntrack pin after Open: %v, want it removed", err)
	}
	if got := ctFlags(t, d, k); got != ctEstablished {
		t.Errorf("migrated flow flags %#x, want established", got)
	}
	toWEP, _ := d.Programs()
	mustSync(t, d, ctStateSnapshot(), true)
	if got := runFrame(t, toWEP, tcpFrame(ctPeer, ctEP, 443, 42000, tcpPSH|tcpACK)); got != tcOK {
		t.Errorf("reply of a flow opened before the upgrade: %d, want pass", got)
	}
}
