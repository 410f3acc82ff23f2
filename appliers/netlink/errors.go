package netlink

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/felis-dev/felis/appliers/netlink/render"
	"github.com/felis-dev/felis/diff"
)

// OpError is a failed kernel op: the op as a command and the kernel's error.
type OpError struct {
	Op  render.Op
	Err error
}

// Error renders "OP: ERRNO (text)", e.g. "ip route add ...: EEXIST (file exists)".
func (e *OpError) Error() string {
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		if name := errnoName(errno); name != "" {
			return fmt.Sprintf("%s: %s (%v)", e.Op, name, e.Err)
		}
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

// Unwrap returns the kernel's error.
func (e *OpError) Unwrap() error { return e.Err }

// ErrNotSynced is returned by Resync before the first Sync: there is no desired state yet.
var ErrNotSynced = errors.New("netlink applier: no desired state yet (call Sync first)")

// waitsForInterface reports whether err on op means a workload interface is not there (or not
// up) yet: the pod is still being wired, and the op is retried on the next sync rather than
// counted as a failure.
func waitsForInterface(op render.Op, err error) bool {
	if !errors.Is(err, syscall.ENODEV) && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENETDOWN) {
		return false
	}
	switch x := op.Object.(type) {
	case render.Route:
		return x.Dev != "" && !isVXLANDevice(x.Dev) && op.Kind != diff.Delete
	case render.Sysctl, render.ProxyNeigh:
		return true
	}
	return false
}

func isVXLANDevice(name string) bool {
	return name == render.VXLANDevice || name == render.VXLANDeviceV6
}

// alreadyGone reports whether a delete failed only because its object no longer exists (the
// kernel removed it with its interface, or someone else did): the desired outcome.
func alreadyGone(op render.Op, err error) bool {
	return op.Kind == diff.Delete && (errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV))
}
