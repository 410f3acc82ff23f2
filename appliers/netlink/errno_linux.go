package netlink

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// errnoName returns the errno's symbol, e.g. "EEXIST".
func errnoName(e syscall.Errno) string { return unix.ErrnoName(e) }
