//go:build !linux

package netlink

import "syscall"

// errnoName returns "" off Linux: the error text alone names the failure.
func errnoName(syscall.Errno) string { return "" }
