package appliers

import (
	"context"
	"net/netip"
	"testing"

	"github.com/felis-dev/felis/snapshot"
)

type recordingDataplane struct{ got []*snapshot.Snapshot }

func (r *recordingDataplane) Name() string { return "rec" }
func (r *recordingDataplane) Sync(_ context.Context, s *snapshot.Snapshot, _ bool) (Result, error) {
	r.got = append(r.got, s)
	return Result{Warnings: []string{"inner"}}, nil
}
func (r *recordingDataplane) Pending(_ context.Context, s *snapshot.Snapshot) ([]string, error) {
	r.got = append(r.got, s)
	return nil, nil
}

// TestResolvingHostEndpoints: each Sync places unnamed host endpoints on the interfaces
// listed at that moment (the address moving moves the host endpoint), leaves the caller's
// snapshot alone, passes snapshots without them through untouched and never lists then.
func TestResolvingHostEndpoints(t *testing.T) {
	ifaces := []snapshot.Interface{{Name: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}
	lists := 0
	inner := &recordingDataplane{}
	dp := ResolvingHostEndpoints(inner, func(context.Context) ([]snapshot.Interface, error) { lists++; return ifaces, nil })
	s := &snapshot.Snapshot{HostEndpoints: []snapshot.HostEndpoint{{ID: "h", ExpectedIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}}
	res, err := dp.Sync(context.Background(), s, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := inner.got[0].HostEndpoints; len(got) != 1 || got[0].Interface != "eth0" {
		t.Errorf("synced host endpoints %+v, want h on eth0", got)
	}
	if s.HostEndpoints[0].Interface != "" {
		t.Errorf("the caller's snapshot was modified: %+v", s.HostEndpoints)
	}
	if len(res.Warnings) != 1 || res.Warnings[0] != "inner" {
		t.Errorf("warnings %q, want the inner dataplane's", res.Warnings)
	}
	ifaces = []snapshot.Interface{{Name: "eth0"}, {Name: "eth1", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}
	if _, err := dp.Pending(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if got := inner.got[1].HostEndpoints; len(got) != 1 || got[0].Interface != "eth1" {
		t.Errorf("after the address moved: %+v, want h on eth1", got)
	}
	ifaces = nil
	res, _ = dp.Sync(context.Background(), s, false)
	if len(inner.got[2].HostEndpoints) != 0 || len(res.Warnings) != 2 {
		t.Errorf("no interface carries it: synced %+v with warnings %q; want none and a warning", inner.got[2].HostEndpoints, res.Warnings)
	}
	named := &snapshot.Snapshot{HostEndpoints: []snapshot.HostEndpoint{{ID: "n", Interface: "eth0"}}}
	before := lists
	if _, err := dp.Sync(context.Background(), named, false); err != nil {
		t.Fatal(err)
	}
	if inner.got[3] != named || lists != before {
		t.Errorf("a snapshot without unnamed host endpoints was copied or listed interfaces (%d lists)", lists-before)
	}
}
