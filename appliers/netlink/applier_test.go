package netlink

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

func TestScenarioOnFake(t *testing.T) {
	scenario(t, NewFake())
}

// TestFakeDump pins what the fake holds after the first sync, foreign objects included.
func TestFakeDump(t *testing.T) {
	f := NewFake()
	for _, err := range []error{
		f.AddInterface("eth0", pfx("192.168.56.1/24"), pfx("fd00:56::1/64")),
		f.AddInterface("calia"), f.AddInterface("calib"), f.AddRoute(foreignRoute),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := render.Render(scenarioSnapshot(), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(f, Options{}).Sync(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	got := f.Dump()
	for _, want := range []string{
		"link vxlan.calico type vxlan id 4096 local 192.168.56.1 dstport 4789 nolearning mtu 1400 address 66:aa:00:00:00:01 up addr 10.65.0.1/32\n",
		"link calia up=true addrs=[]\n",
		"sysctl net.ipv4.conf.calia.proxy_arp = 1\n",
		"sysctl net.ipv4.conf.eth0.proxy_arp = 0\n", // not a workload interface: untouched
		"neigh 10.65.1.1 dev vxlan.calico lladdr 66:aa:00:00:00:02 PERMANENT\n",
		"fdb 66:bb:00:00:00:02 dev vxlan-v6.calico dst fd00:56::2 self permanent\n",
		"route 10.99.0.0/24 via 192.168.56.254 proto 4\n",
		"route fd10:0:0:2::/122 via fd00:56::3 proto 80\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("dump lacks %q; dump:\n%s", want, got)
		}
	}
}

// TestFakeSemantics checks the kernel behaviours the applier relies on, errno by errno; the
// same cases run against the real kernel in TestKernelSemantics.
func TestFakeSemantics(t *testing.T) {
	semantics(t, func(t *testing.T) testKernel { return NewFake() })
}

func semantics(t *testing.T, newKernel func(t *testing.T) testKernel) {
	ctx := context.Background()
	route := func(dst, dev string) render.Route {
		return render.Route{Table: render.TableMain, Dst: pfx(dst), Type: render.Unicast, Dev: dev, Scope: render.ScopeLink, Protocol: 80}
	}
	tests := []struct {
		name string
		op   render.Op
		want error
	}{
		{"route to a missing device", render.Op{Kind: diff.Add, Object: route("10.0.0.1/32", "nope")}, syscall.ENODEV},
		{"route add over an existing one", render.Op{Kind: diff.Add, Object: route("10.0.0.2/32", "cali1")}, syscall.EEXIST},
		{"replace creates", render.Op{Kind: diff.Replace, Object: route("10.0.0.3/32", "cali1")}, nil},
		{"replace turns a route into a blackhole", render.Op{Kind: diff.Replace, Object: render.Route{Table: render.TableMain, Dst: pfx("10.0.0.2/32"), Type: render.Blackhole, Protocol: 80}}, nil},
		{"delete of a missing route", render.Op{Kind: diff.Delete, Object: route("10.0.0.4/32", "cali1")}, syscall.ESRCH},
		{"delete with another protocol", render.Op{Kind: diff.Delete, Object: func() render.Route { r := route("10.0.0.2/32", "cali1"); r.Protocol = 3; return r }()}, syscall.ESRCH},
		{"gateway not on a connected subnet", render.Op{Kind: diff.Add, Object: render.Route{Table: render.TableMain, Dst: pfx("10.1.0.0/24"), Type: render.Unicast, Gateway: addr("172.16.0.1"), Protocol: 80}}, syscall.ENETUNREACH},
		{"IPv6 route to a missing device", render.Op{Kind: diff.Add, Object: render.Route{Table: render.TableMain, Dst: pfx("fd00::1/128"), Type: render.Unicast, Dev: "nope", Protocol: 80}}, syscall.ENODEV},
		{"IPv6 blackhole", render.Op{Kind: diff.Add, Object: render.Route{Table: render.TableMain, Dst: pfx("fd00::/64"), Type: render.Blackhole, Protocol: 80}}, nil},
		{"route in another table", render.Op{Kind: diff.Add, Object: render.Route{Table: 100, Dst: pfx("10.0.0.2/32"), Type: render.Blackhole, Protocol: 80}}, nil},
		{"sysctl of a missing interface", render.Op{Kind: diff.Add, Object: render.Sysctl{Family: "ipv4", Table: "conf", Interface: "nope", Name: "proxy_arp", Value: "1"}}, syscall.ENOENT},
		{"neighbour on a missing device", render.Op{Kind: diff.Add, Object: render.Neigh{Dev: "vxlan.calico", IP: addr("10.0.0.1"), MAC: "66:00:00:00:00:01"}}, syscall.ENODEV},
		{"FDB entry on a missing device", render.Op{Kind: diff.Add, Object: render.FDB{Dev: "vxlan.calico", MAC: "66:00:00:00:00:01", Dst: addr("192.168.0.1")}}, syscall.ENODEV},
		{"proxy entry on a missing interface", render.Op{Kind: diff.Add, Object: render.ProxyNeigh{Dev: "nope", IP: render.PodGatewayV6}}, syscall.ENODEV},
		{"second device with one name", render.Op{Kind: diff.Add, Object: render.Link{Name: "cali1", VNI: 1, Port: 4789, Up: true}}, syscall.EEXIST},
		{"delete of a missing device", render.Op{Kind: diff.Delete, Object: render.Link{Name: "vxlan.calico"}}, syscall.ENODEV},
		{"IPv4 route to a down interface", render.Op{Kind: diff.Add, Object: route("10.0.0.5/32", "down1")}, syscall.ENETDOWN},
		{"IPv6 route to a down interface", render.Op{Kind: diff.Add, Object: render.Route{Table: render.TableMain, Dst: pfx("fd00::5/128"), Type: render.Unicast, Dev: "down1", Protocol: 80}}, syscall.ENETDOWN},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newKernel(t)
			for _, err := range []error{k.AddInterface("cali1"), k.AddInterface("down1"), k.SetUp("down1", false)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			if errs := k.Do(ctx, []render.Op{{Kind: diff.Add, Object: route("10.0.0.2/32", "cali1")}}); errs[0] != nil {
				t.Fatal(errs[0])
			}
			got := k.Do(ctx, []render.Op{tc.op})[0]
			if !errors.Is(got, tc.want) && !(got == nil && tc.want == nil) {
				t.Errorf("Do(%s) = %v, want %v", tc.op, got, tc.want)
			}
		})
	}
}

// linkDown reports which of an IPv4 and an IPv6 route through an interface survive it going
// down, for comparing the Fake with the kernel.
func linkDown(t *testing.T, k testKernel) (v4, v6 bool) {
	t.Helper()
	r4 := render.Route{Table: render.TableMain, Dst: pfx("10.0.0.9/32"), Type: render.Unicast, Dev: "cali9", Scope: render.ScopeLink, Protocol: 80}
	r6 := render.Route{Table: render.TableMain, Dst: pfx("fd00::9/128"), Type: render.Unicast, Dev: "cali9", Protocol: 80}
	for _, err := range []error{k.AddInterface("cali9"), k.AddRoute(r4), k.AddRoute(r6), k.SetUp("cali9", false)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return k.HasRoute(r4), k.HasRoute(r6)
}

func TestFakeLinkDown(t *testing.T) {
	v4, v6 := linkDown(t, NewFake())
	if v4 || v6 {
		t.Errorf("after link down: IPv4 route kept %v, IPv6 route kept %v; want both gone", v4, v6)
	}
}

// TestDeleteInterfaceDropsRoutes: the kernel removes a link's routes, and Resync restores
// what is desired once the interface is back.
func TestDeleteInterfaceDropsRoutes(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	for _, n := range []string{"calia", "calib"} {
		if err := f.AddInterface(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.AddInterface("eth0", pfx("192.168.56.1/24"), pfx("fd00:56::1/64")); err != nil {
		t.Fatal(err)
	}
	st, err := render.Render(scenarioSnapshot(), render.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := New(f, Options{})
	if _, err := a.Sync(ctx, st); err != nil {
		t.Fatal(err)
	}
	if err := f.DeleteInterface("calia"); err != nil {
		t.Fatal(err)
	}
	if err := f.AddInterface("calia"); err != nil {
		t.Fatal(err)
	}
	res, err := a.Resync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range res.Ops {
		got = append(got, op.String())
	}
	want := []string{
		"sysctl -w net.ipv4.conf.calia.proxy_arp=1",
		"sysctl -w net.ipv4.conf.calia.route_localnet=1",
		"sysctl -w net.ipv4.neigh.calia.proxy_delay=0",
		"sysctl -w net.ipv6.conf.calia.accept_ra=0",
		"ip route add 10.65.0.2/32 dev calia proto 80 scope link",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("resync after the pod's veth was re-created (-want +got):\n%s", d)
	}
}

func TestResyncBeforeSync(t *testing.T) {
	if _, err := New(NewFake(), Options{}).Resync(context.Background()); !errors.Is(err, ErrNotSynced) {
		t.Errorf("Resync before Sync = %v, want ErrNotSynced", err)
	}
}

func TestOpErrorNamesOpAndErrno(t *testing.T) {
	e := &OpError{Op: render.Op{Kind: diff.Add, Object: render.Route{Table: render.TableMain, Dst: pfx("10.0.0.0/8"), Type: render.Blackhole, Protocol: 80}}, Err: syscall.EEXIST}
	if got, want := e.Error(), "ip route add blackhole 10.0.0.0/8 proto 80: EEXIST (file exists)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
