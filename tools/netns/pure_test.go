//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVethName(t *testing.T) {
	// Expected values computed with `printf NS.POD | sha1sum | cut -c1-11`.
	tests := []struct {
		prefix, namespace, pod, want string
	}{
		{"", "default", "web", "cali68caf03a5f4"},
		{"cali", "kube-system", "coredns-7db6d8ff4d-abcde", "calif90c21019df"},
		{"tap", "ns", "p", "tap0ad56bf5e97"},
	}
	for _, tt := range tests {
		if got := VethName(tt.prefix, tt.namespace, tt.pod); got != tt.want {
			t.Errorf("VethName(%q, %q, %q) = %q, want %q", tt.prefix, tt.namespace, tt.pod, got, tt.want)
		}
		if got := VethName(tt.prefix, tt.namespace, tt.pod); len(got) > 15 {
			t.Errorf("VethName(%q, %q, %q) = %q is longer than IFNAMSIZ-1", tt.prefix, tt.namespace, tt.pod, got)
		}
	}
}

func TestTestOwnerPID(t *testing.T) {
	tests := []struct {
		name   string
		pid    int
		wantOK bool
	}{
		{"felist-1234-1-node1", 1234, true},
		{"felist-7-12-node1-default-web", 7, true},
		{"felist--1-node1", 0, false},
		{"felist-12a-1-node1", 0, false},
		{"felist-0-1-node1", 0, false},
		{"felist-1234", 0, false},
		{"felis-1234-1-node1", 0, false},
		{"cni-1234-1", 0, false},
		{"felist-99999999999999-1-x", 0, false},
	}
	for _, tt := range tests {
		pid, ok := testOwnerPID(tt.name)
		if pid != tt.pid || ok != tt.wantOK {
			t.Errorf("testOwnerPID(%q) = %d, %v; want %d, %v", tt.name, pid, ok, tt.pid, tt.wantOK)
		}
	}
}

func TestSubnetAddressing(t *testing.T) {
	type addrs struct{ V4, V6, Node4, Node6, Router4, Router6 string }
	tests := []struct {
		subnet, host int
		want         addrs
	}{
		{0, 1, addrs{"192.168.56.0/24", "fd00:56::/64", "192.168.56.1", "fd00:56::1", "192.168.56.254", "fd00:56::254"}},
		{1, 12, addrs{"192.168.57.0/24", "fd00:57::/64", "192.168.57.12", "fd00:57::12", "192.168.57.254", "fd00:57::254"}},
	}
	for _, tt := range tests {
		v4, v6 := subnetAddrs(tt.subnet)
		got := addrs{v4.String(), v6.String(), hostAddr(v4, tt.host).String(), hostAddr(v6, tt.host).String(),
			hostAddr(v4, 254).String(), hostAddr(v6, 254).String()}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("subnet %d host %d (-want +got):\n%s", tt.subnet, tt.host, diff)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want Outcome
	}{
		{nil, Allowed},
		{os.ErrDeadlineExceeded, Timeout},
		{fmt.Errorf("dial: %w", timeoutErr{}), Timeout},
		{&os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}, Refused},
		{&os.SyscallError{Syscall: "connect", Err: syscall.EHOSTUNREACH}, Unreachable},
		{&os.SyscallError{Syscall: "connect", Err: syscall.ENETUNREACH}, Unreachable},
		{&os.SyscallError{Syscall: "sendto", Err: syscall.EPERM}, Unreachable},
		{errors.New("something else"), Failed},
	}
	for _, tt := range tests {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func TestResultVerdicts(t *testing.T) {
	tests := []struct {
		outcome               Outcome
		wantAllowed, wantDeny bool
	}{
		{Allowed, true, false},
		{Timeout, false, true},
		{Unreachable, false, true},
		{Refused, false, false}, // reached the destination: neither allowed (no echo) nor denied
		{Failed, false, false},
	}
	for _, tt := range tests {
		r := Result{From: "ns", Protocol: TCP, To: netip.MustParseAddrPort("10.0.0.1:80"), Outcome: tt.outcome}
		if got := r.Allowed() == nil; got != tt.wantAllowed {
			t.Errorf("%s: Allowed() passes = %v, want %v", r, got, tt.wantAllowed)
		}
		if got := r.Denied() == nil; got != tt.wantDeny {
			t.Errorf("%s: Denied() passes = %v, want %v", r, got, tt.wantDeny)
		}
	}
}

func TestQuotesEcho(t *testing.T) {
	v4 := make([]byte, 28)
	v4[0] = 0x45
	v4[24], v4[25] = 0x12, 0x34
	v6 := make([]byte, 48)
	v6[44], v6[45] = 0x12, 0x34
	tests := []struct {
		name   string
		quoted []byte
		v6     bool
		id     int
		want   bool
	}{
		{"v4 match", v4, false, 0x1234, true},
		{"v4 other id", v4, false, 0x1235, false},
		{"v4 truncated", v4[:24], false, 0x1234, false},
		{"v6 match", v6, true, 0x1234, true},
		{"v6 other id", v6, true, 0x4321, false},
		{"v6 truncated", v6[:40], true, 0x1234, false},
	}
	for _, tt := range tests {
		if got := quotesEcho(tt.quoted, tt.v6, tt.id); got != tt.want {
			t.Errorf("%s: quotesEcho = %v, want %v", tt.name, got, tt.want)
		}
	}
}
