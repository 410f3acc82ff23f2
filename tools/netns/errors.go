//go:build linux

package netns

import "errors"

// ErrClosed is returned by every constructor once the Harness has been closed.
var ErrClosed = errors.New("netns: harness closed")

// ErrNotRoot is returned by NewHarness when the process lacks the privileges to create
// network namespaces (it must run as root, or with CAP_SYS_ADMIN and CAP_NET_ADMIN).
var ErrNotRoot = errors.New("netns: network namespaces need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
