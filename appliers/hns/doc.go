// Package hns programs felis's policy and VXLAN routes into the Windows Host Networking Service:
// a pure render of the snapshot into per-endpoint, priority-ordered HNS ACL lists (IP sets
// flattened, tiers/Pass/negations compiled away) and RemoteSubnetRoute network policies, a pure
// Plan against observed HNS state, and an Applier driving a Client (hcn on Windows, Fake in tests).
//
// # How the ACL lists are built
//
// HNS evaluates an endpoint's Switch ACL rules by priority, lowest first; the first matching rule
// decides; an endpoint with no matching rule lets traffic through. A rule matches a product of
// per-dimension sets: one protocol (or any), a union of local prefixes, a union of remote
// prefixes, a union of local port ranges and one of remote port ranges (ports for TCP and UDP
// only). The render therefore works on "boxes" (such products, with the address and port
// dimensions held as exact interval sets) and builds, for each direction of each endpoint, a
// first-match list of (box, Allow|Block) entries that ends with a catch-all Block:
//
//   - A rule's positive match is a union of boxes (DNF): nets, IP sets and IP-version are
//     intersected per side; a negated net or negated ip/net set is subtracted from the address
//     set of its side (complement over the family's space); notPorts is subtracted from the port
//     set (ports only exist with protocol TCP or UDP); numeric ports OR named-port sets become one
//     box per (protocol, port) member; service sets are intersected the same way.
//   - Negations that are not a single dimension (notProtocol, negated named-port sets) have no
//     HNS primitive. They are compiled by continuation: a rule "B and not N -> A" followed by the
//     list R (everything after it, already compiled) becomes "(B∩N)∧R, then B -> A, then R",
//     where X∧R is R restricted to X (each entry intersected with X, stopping after the first
//     entry that covers X). Packets in B∩N get exactly R's verdict, the rest of B gets A.
//   - Pass is the same construction: "B -> Pass" becomes "B∧T" where T is the compiled program
//     from the next tier on (or from the profiles after the last tier); a Pass in a profile
//     continues with the next profile. Log rules are dropped (they never decide). The end of a
//     tier is a catch-all Block, or nothing when the tier's default action is Pass; after the
//     profiles comes the catch-all Block.
//   - Entries covered by an earlier entry, and Block entries that no later Allow entry overlaps,
//     are removed; same-action neighbours differing in one dimension are merged.
//
// Each entry then becomes one HNS rule per address family (lists longer than MaxListEntries are
// split), with strictly increasing priorities from PolicyRuleBasePriority, or one priority per
// run of equal actions when the list is longer than the range allows (rules of equal priority
// never disagree, so HNS's tie-break cannot matter). ICMP type/code matches (icmp, notICMP) and
// port matches on protocols other than TCP and UDP have no HNS equivalent: the endpoint's render
// fails with ErrUnsupported and Plan keeps its previous rules (or blocks it, if it has none).
//
// The local side of every rule is intersected with the endpoint's own addresses (plus its
// allowed spoofed sources): on an HNS endpoint port the local address is the endpoint's. A
// rule whose local side is all of those addresses carries no LocalAddresses.
//
// The equivalence tests (equivalence_test.go, reach_test.go) check, for every golden scenario
// and for random snapshots, that the first matching rule by priority gives snapshot.Evaluator's
// verdict on every probe flow (addresses at every prefix boundary and outside, every protocol
// mentioned, ports at every range boundary).
//
// Out of scope here: host endpoints (Calico's Windows dataplane has none), DefaultEndpointToHost
// (HNS has no host chain), and the Host-type (WFP) rules Calico adds for l2bridge networks.
// Options.HostAddrs adds Calico's allow-host-to-endpoint rule when wanted.
package hns
