//go:build windows

package hns

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"

	"github.com/Microsoft/hcsshim/hcn"
)

// DefaultNetworkPattern matches the HNS network Calico's CNI plugin creates.
const DefaultNetworkPattern = "(?i)calico.*"

// HCNClient is the Client for a real Windows node: it drives HNS through hcsshim's hcn (HNS
// schema v2) on the first network whose name matches its pattern.
type HCNClient struct {
	network *regexp.Regexp
}

var _ Client = (*HCNClient)(nil)

// NewHCNClient returns a client for the HNS network whose name matches pattern (empty means
// DefaultNetworkPattern, as Calico's KUBE_NETWORK default).
func NewHCNClient(pattern string) (*HCNClient, error) {
	if pattern == "" {
		pattern = DefaultNetworkPattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("HNS network pattern %q: %w", pattern, err)
	}
	return &HCNClient{network: re}, nil
}

func (c *HCNClient) findNetwork() (*hcn.HostComputeNetwork, error) {
	nets, err := hcn.ListNetworks()
	if err != nil {
		return nil, fmt.Errorf("list HNS networks: %w", err)
	}
	for i := range nets {
		if c.network.MatchString(nets[i].Name) {
			return &nets[i], nil
		}
	}
	return nil, fmt.Errorf("no HNS network matches %q: %w", c.network, ErrNotFound)
}

// Endpoints implements Client.
func (c *HCNClient) Endpoints(context.Context) ([]HNSEndpoint, error) {
	network, err := c.findNetwork()
	if err != nil {
		return nil, err
	}
	eps, err := hcn.ListEndpointsOfNetwork(network.Id)
	if err != nil {
		return nil, fmt.Errorf("list endpoints of HNS network %s: %w", network.Name, err)
	}
	var out []HNSEndpoint
	for _, e := range eps {
		if e.Flags&hcn.EndpointFlagsRemoteEndpoint != 0 {
			continue
		}
		he := HNSEndpoint{ID: e.Id, Name: e.Name}
		for _, ip := range e.IpConfigurations {
			if a, err := netip.ParseAddr(ip.IpAddress); err == nil {
				he.Addrs = append(he.Addrs, a)
			}
		}
		for _, p := range e.Policies {
			if p.Type != hcn.ACL {
				continue
			}
			var s hcn.AclPolicySetting
			if err := json.Unmarshal(p.Settings, &s); err != nil {
				return nil, fmt.Errorf("endpoint %s: decode ACL policy: %w", e.Id, err)
			}
			he.ACLs = append(he.ACLs, ACLSetting{
				Protocols: s.Protocols, Action: string(s.Action), Direction: string(s.Direction),
				LocalAddresses: s.LocalAddresses, RemoteAddresses: s.RemoteAddresses,
				LocalPorts: s.LocalPorts, RemotePorts: s.RemotePorts, RuleType: string(s.RuleType), Priority: s.Priority,
			})
		}
		out = append(out, he)
	}
	return out, nil
}

// SetACLs implements Client. An Update request replaces the endpoint's policy settings with
// those given, so the endpoint's other (non-ACL) policies are sent back unchanged with the
// new ACL list.
func (c *HCNClient) SetACLs(_ context.Context, endpointID string, acls []ACLSetting) error {
	ep, err := hcn.GetEndpointByID(endpointID)
	if err != nil {
		return fmt.Errorf("endpoint %s: %w", endpointID, err)
	}
	var req hcn.PolicyEndpointRequest
	for _, p := range ep.Policies {
		if p.Type != hcn.ACL {
			req.Policies = append(req.Policies, p)
		}
	}
	for _, s := range acls {
		raw, err := json.Marshal(hcn.AclPolicySetting{
			Protocols: s.Protocols, Action: hcn.ActionType(s.Action), Direction: hcn.DirectionType(s.Direction),
			LocalAddresses: s.LocalAddresses, RemoteAddresses: s.RemoteAddresses,
			LocalPorts: s.LocalPorts, RemotePorts: s.RemotePorts, RuleType: hcn.RuleType(s.RuleType), Priority: s.Priority,
		})
		if err != nil {
			return err
		}
		req.Policies = append(req.Policies, hcn.EndpointPolicy{Type: hcn.ACL, Settings: raw})
	}
	if err := ep.ApplyPolicy(hcn.RequestTypeUpdate, req); err != nil {
		return fmt.Errorf("endpoint %s: apply %d ACLs: %w", endpointID, len(acls), err)
	}
	return nil
}

// RemoteSubnetRoutes implements Client.
func (c *HCNClient) RemoteSubnetRoutes(context.Context) ([]RemoteSubnetRoute, error) {
	network, err := c.findNetwork()
	if err != nil {
		return nil, err
	}
	var out []RemoteSubnetRoute
	for _, p := range network.Policies {
		if p.Type != hcn.RemoteSubnetRoute {
			continue
		}
		var s hcn.RemoteSubnetRoutePolicySetting
		if err := json.Unmarshal(p.Settings, &s); err != nil {
			return nil, fmt.Errorf("network %s: decode RemoteSubnetRoute: %w", network.Name, err)
		}
		r := RemoteSubnetRoute{IsolationID: s.IsolationId, DistributedRouterMacAddress: s.DistributedRouterMacAddress}
		r.DestinationPrefix, _ = netip.ParsePrefix(s.DestinationPrefix)
		r.ProviderAddress, _ = netip.ParseAddr(s.ProviderAddress)
		out = append(out, r)
	}
	return slices.Clip(out), nil
}

func (c *HCNClient) routeRequest(r RemoteSubnetRoute) (hcn.PolicyNetworkRequest, error) {
	raw, err := json.Marshal(hcn.RemoteSubnetRoutePolicySetting{
		DestinationPrefix: r.DestinationPrefix.String(), IsolationId: r.IsolationID,
		ProviderAddress: r.ProviderAddress.String(), DistributedRouterMacAddress: r.DistributedRouterMacAddress,
	})
	if err != nil {
		return hcn.PolicyNetworkRequest{}, err
	}
	return hcn.PolicyNetworkRequest{Policies: []hcn.NetworkPolicy{{Type: hcn.RemoteSubnetRoute, Settings: raw}}}, nil
}

// AddRemoteSubnetRoute implements Client.
func (c *HCNClient) AddRemoteSubnetRoute(_ context.Context, r RemoteSubnetRoute) error {
	network, err := c.findNetwork()
	if err != nil {
		return err
	}
	req, err := c.routeRequest(r)
	if err != nil {
		return err
	}
	if err := network.AddPolicy(req); err != nil {
		return fmt.Errorf("network %s: add %s: %w", network.Name, r, err)
	}
	return nil
}

// RemoveRemoteSubnetRoute implements Client.
func (c *HCNClient) RemoveRemoteSubnetRoute(_ context.Context, r RemoteSubnetRoute) error {
	network, err := c.findNetwork()
	if err != nil {
		return err
	}
	req, err := c.routeRequest(r)
	if err != nil {
		return err
	}
	if err := network.RemovePolicy(req); err != nil {
		return fmt.Errorf("network %s: remove %s: %w", network.Name, r, err)
	}
	return nil
}
