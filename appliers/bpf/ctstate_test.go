//go:build linux

package bpf

import (
	"context"
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
		{"SYN+ACK back", toWEP, back(40000, tcpSYN|tcpACK), tcOK, 40000, ctFlagEstablished},
		{"ACK out", fromWEP, out(40000, tcpACK), tcOK, 40000, ctFlagEstablished},
		{"PSH+ACK back", toWEP, back(40000, tcpPSH|tcpACK), tcOK, 40000, ctFlagEstablished},
		{"NULL back on the flow", toWEP, back(40000, 0), tcShot, 40000, ctFlagEstablished},
		{"FIN+ACK out", fromWEP, out(40000, tcpFIN|tcpACK), tcOK, 40000, ctFlagEstablished | ctFinFwd},
		{"FIN+ACK back", toWEP, back(40000, tcpFIN|tcpACK), tcOK, 40000, ctFlagEstablished | ctFinFwd | ctFinRev},
		{"last ACK out", fromWEP, out(40000, tcpACK), tcOK, 40000, ctFlagEstablished | ctFinFwd | ctFinRev},
		{"SYN out reopens the closed flow (policy, new entry)", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},
		{"SYN+ACK back", toWEP, back(40000, tcpSYN|tcpACK), tcOK, 40000, ctFlagEstablished},
		{"RST back", toWEP, back(40000, tcpRST), tcOK, 40000, ctFlagEstablished | ctFlagRST},
		{"SYN out after the RST (policy, new entry)", fromWEP, out(40000, tcpSYN), tcOK, 40000, 0},

		// Loose pickup: a mid-flow ACK with no flow goes to policy and, allowed, is tracked
		// as established.
		{"ACK out, no flow (picked up)", fromWEP, out(40001, tcpACK), tcOK, 40001, ctFlagEstablished},
		{"ACK back", toWEP, back(40001, tcpACK), tcOK, 40001, ctFlagEstablished},
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
	now, err := monotonicNanos()
	if err != nil {
		t.Fatal(err)
	}
	return now
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

// timeoutCase is a flow in one conntrack state, its idle timeout and a reply to test it.
type timeoutCase struct {
	name    string
	open    [][2][]byte // frames (fromWEP, then toWEP if any) that put the flow in its state
	key     policyCtKey
	reply   []byte
	timeout time.Duration
	created time.Duration // 0: long ago
}

// openFresh empties the conntrack map and puts the case's flow in its state.
func (c timeoutCase) openFresh(t *testing.T, d *Dataplane) {
	t.Helper()
	toWEP, fromWEP := d.Programs()
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
}

// timeoutCases: one flow per state and protocol, with Felix's default timeouts.
func timeoutCases() []timeoutCase {
	icmp := func(src, dst netip.Addr, typ uint8) []byte {
		return v4frag(src, dst, 1, 1, 0, false, []byte{typ, 0, 0, 0, 0x00, 0x07, 0, 1})
	}
	gre := func(src, dst netip.Addr) []byte { return v4frag(src, dst, 47, 1, 0, false, make([]byte, 8)) }
	udp := func(src, dst netip.Addr, sport, dport uint16) []byte {
		return v4frag(src, dst, 17, 1, 0, false, l4ports(17, sport, dport).body)
	}
	const s = time.Second
	return []timeoutCase{
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
}

// TestConntrackTimeouts: each kind of flow expires after Felix's default idle timeout for
// its state (checked one second either side by ageing the entry), and no flow expires within
// the creation grace period. An expired flow's next packet is new again: its reply meets
// the ingress policy, which denies the peer (for TCP a reply that cannot open a flow is
// dropped as invalid).
func TestConntrackTimeouts(t *testing.T) {
	d, _ := openTest(t)
	toWEP, _ := d.Programs()
	mustSync(t, d, ctStateSnapshot(), true)
	for _, c := range timeoutCases() {
		created := c.created
		if created == 0 {
			created = 2 * time.Hour
		}
		// Each check starts from a fresh flow: a passing reply may move it on (a SYN-ACK
		// establishes it).
		check := func(idle time.Duration, want uint32) {
			c.openFresh(t, d)
			age(t, d, c.key, idle, created)
			if got := runFrame(t, toWEP, c.reply); got != want {
				t.Errorf("%s: reply after %v idle (created %v ago): %d, want %d", c.name, idle, created, got, want)
			}
		}
		check(c.timeout-time.Second, tcOK)
		if c.created == 0 { // (inside the grace period only the first check applies)
			check(c.timeout+time.Second, tcShot)
		}
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
	if got := ctFlags(t, d, k); got != ctFlagEstablished {
		t.Errorf("migrated flow flags %#x, want established", got)
	}
	toWEP, _ := d.Programs()
	mustSync(t, d, ctStateSnapshot(), true)
	if got := runFrame(t, toWEP, tcpFrame(ctPeer, ctEP, 443, 42000, tcpPSH|tcpACK)); got != tcOK {
		t.Errorf("reply of a flow opened before the upgrade: %d, want pass", got)
	}
}

// TestConntrackSweep: a full Sync deletes the flows the program treats as expired (the same
// boundaries as TestConntrackTimeouts: the Go mirror of ct_expired agrees with ct.h) and
// fragment records past the reassembly timeout, and keeps the rest.
func TestConntrackSweep(t *testing.T) {
	d, _ := openTest(t)
	s := ctStateSnapshot()
	mustSync(t, d, s, true)
	present := func(k policyCtKey) bool {
		var v policyCtVal
		return d.CTMap().Lookup(&k, &v) == nil
	}
	for _, c := range timeoutCases() {
		created := c.created
		if created == 0 {
			created = 2 * time.Hour
		}
		c.openFresh(t, d)
		age(t, d, c.key, c.timeout-time.Second, created)
		if _, err := d.Sync(context.Background(), s, true); err != nil || !present(c.key) {
			t.Errorf("%s: sweep %v short of the timeout: err %v, flow kept %v; want it kept", c.name, c.timeout-time.Second, err, present(c.key))
		}
		if c.created != 0 {
			continue
		}
		age(t, d, c.key, c.timeout+time.Second, created)
		if _, err := d.Sync(context.Background(), s, true); err != nil || present(c.key) {
			t.Errorf("%s: sweep %v past the timeout: err %v, flow kept %v; want it deleted", c.name, c.timeout+time.Second, err, present(c.key))
		}
	}

	// Fragment records: a first fragment that passed is recorded, and swept 30 s later.
	clearCT(t, d.CTMap())
	toWEP, _ := d.Programs()
	if got := runFrame(t, toWEP, v4frag(ctClient, ctEP, 17, 5, 0, true, l4ports(17, 1000, 53).body)); got != tcOK {
		t.Fatalf("first fragment from an allowed source: %d", got)
	}
	var fk policyFragKey
	var fv policyFragVal
	if !d.objs.FfragV1.Iterate().Next(&fk, &fv) {
		t.Fatal("no fragment record")
	}
	if _, err := d.Sync(context.Background(), s, true); err != nil || !d.objs.FfragV1.Iterate().Next(&fk, &fv) {
		t.Errorf("sweep of a fresh fragment record: err %v, want it kept", err)
	}
	fv.Seen = monotonicNow(t) - uint64(31*time.Second)
	if err := d.objs.FfragV1.Update(&fk, &fv, ebpf.UpdateExist); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sync(context.Background(), s, true); err != nil {
		t.Fatal(err)
	}
	if d.objs.FfragV1.Iterate().Next(&fk, &fv) {
		t.Errorf("fragment record left after the sweep: %+v", fk)
	}
	// The UDP flow the fragment opened is fresh: it stays.
	if !present(flowKey(17, ctClient, ctEP, 1000, 53, 0)) {
		t.Error("the fresh UDP flow of the fragmented datagram was swept")
	}
}

// BenchmarkConntrackSweep: one sweep of fct_v2 holding 100,000 live flows (nothing to delete:
// the cost every full resync pays to find expired entries).
func BenchmarkConntrackSweep(b *testing.B) {
	d, _ := openTest(b)
	now, err := monotonicNanos()
	if err != nil {
		b.Fatal(err)
	}
	v := policyCtVal{Created: now, LastSeen: now, Flags: ctFlagEstablished}
	for i := range 100_000 {
		k := flowKey(6, ctEP, ctPeer, uint16(i), uint16(i>>16)+1, 1)
		if err := d.CTMap().Put(&k, &v); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if n, err := d.sweepConntrack(); err != nil || n != 0 {
			b.Fatalf("sweep: %d deleted, %v", n, err)
		}
	}
}
