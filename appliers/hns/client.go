package hns

import (
	"context"
	"net/netip"
)

// Client is the part of HNS felis drives: the local endpoints of its network with their ACL
// lists, and the network's RemoteSubnetRoute policies. HCNClient (Windows only) talks to HNS;
// Fake holds the same state in memory.
type Client interface {
	// Endpoints lists the local (non-remote) endpoints of felis's HNS network.
	Endpoints(ctx context.Context) ([]HNSEndpoint, error)
	// SetACLs replaces the endpoint's entire ACL list, as HNS does for any ACL update. It
	// returns an error wrapping ErrNotFound for an unknown endpoint and ErrMalformed for a
	// rule HNS rejects; on error the previous list stays.
	SetACLs(ctx context.Context, endpointID string, acls []ACLSetting) error
	// RemoteSubnetRoutes lists the network's RemoteSubnetRoute policies.
	RemoteSubnetRoutes(ctx context.Context) ([]RemoteSubnetRoute, error)
	// AddRemoteSubnetRoute adds one; an existing route for the same prefix is ErrExists.
	AddRemoteSubnetRoute(ctx context.Context, r RemoteSubnetRoute) error
	// RemoveRemoteSubnetRoute removes exactly r; an absent route is ErrNotFound.
	RemoveRemoteSubnetRoute(ctx context.Context, r RemoteSubnetRoute) error
}

// HNSEndpoint is an HNS endpoint as a Client reports it.
type HNSEndpoint struct {
	ID    string // HNS's GUID
	Name  string
	Addrs []netip.Addr
	ACLs  []ACLSetting
}
