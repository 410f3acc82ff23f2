//go:build linux

package main

import (
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/felis-dev/felis/tools/netns"
)

//go:embed demo.json
var demoConfig []byte

// Topology is the --config file format (JSON).
type Topology struct {
	// Prefix names every namespace: PREFIX-NODE and PREFIX-NODE-PODNAMESPACE-POD.
	Prefix string `json:"prefix"`
	// SkipHostWiring leaves host routes and proxy-ARP/NDP to felis's agent.
	SkipHostWiring bool `json:"skipHostWiring"`
	// Nodes to build; more than one puts them on an underlay bridge.
	Nodes []NodeSpec `json:"nodes"`
}

// NodeSpec is one node of a Topology.
type NodeSpec struct {
	// Name is the node name (felis's --node).
	Name string `json:"name"`
	// Subnet is the underlay subnet index (0 = 192.168.56.0/24, 1 = 192.168.57.0/24, ...).
	Subnet int `json:"subnet"`
	// Pods to wire to this node.
	Pods []PodSpec `json:"pods"`
}

// PodSpec is one pod of a NodeSpec.
type PodSpec struct {
	// Namespace and Name identify the pod (Kubernetes namespace and name).
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// IPv4 and IPv6 are its addresses; either may be left out.
	IPv4 netip.Addr `json:"ipv4"`
	IPv6 netip.Addr `json:"ipv6"`
}

const usage = `felis-netns builds network namespaces to try felis by hand (as root).

  felis-netns up [--config FILE] [--prefix P] [--skip-host-wiring]
        build the topology (default: 1 node, 2 pods; see demo.json) and leave it running
  felis-netns down [--prefix P]
        remove every namespace named P-*, with the processes inside
  felis-netns probe [--prefix P] --from NAME --to ADDR[:PORT] [--proto TCP|UDP|ICMP] [--timeout 2s]
        send one echo from namespace P-NAME; exit 0 if allowed, 3 if dropped or rejected
        (Timeout/Unreachable), 4 if refused (nothing listening), 1 on error
  felis-netns serve [--prefix P] --in NAME [--port 8080] [--proto TCP|UDP]
        run an echo server in namespace P-NAME until interrupted
  felis-netns sweep
        remove leftovers of crashed test runs (felist-<dead pid>-*)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "probe":
		code, err = probe(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	case "sweep":
		var removed []string
		removed, err = netns.Sweep()
		for _, name := range removed {
			fmt.Println("removed", name)
		}
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "felis-netns: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "felis-netns:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func loadTopology(path string) (Topology, error) {
	data := demoConfig
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Topology{}, err
		}
	} else {
		path = "built-in demo.json"
	}
	var t Topology
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return Topology{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(t.Nodes) == 0 {
		return Topology{}, fmt.Errorf("%s: nodes: at least one node is needed", path)
	}
	for i, n := range t.Nodes {
		if n.Name == "" {
			return Topology{}, fmt.Errorf("%s: nodes[%d].name: empty", path, i)
		}
		if n.Subnet < 0 {
			return Topology{}, fmt.Errorf("%s: nodes[%d].subnet: negative", path, i)
		}
	}
	return t, nil
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	config := fs.String("config", "", "topology file (JSON); default: the built-in 1-node/2-pod demo")
	prefix := fs.String("prefix", "", "namespace name prefix (overrides the file's; default felisdemo)")
	skip := fs.Bool("skip-host-wiring", false, "leave host routes and proxy-ARP/NDP to felis's agent")
	_ = fs.Parse(args)
	topo, err := loadTopology(*config)
	if err != nil {
		return err
	}
	if *prefix != "" {
		topo.Prefix = *prefix
	}
	if topo.Prefix == "" {
		topo.Prefix = "felisdemo"
	}
	topo.SkipHostWiring = topo.SkipHostWiring || *skip
	if existing := existingWithPrefix(topo.Prefix); len(existing) > 0 {
		return fmt.Errorf("namespaces with prefix %s already exist (%s); run `felis-netns down --prefix %s` first", topo.Prefix, strings.Join(existing, ", "), topo.Prefix)
	}
	h, err := netns.NewHarness(netns.Options{Prefix: topo.Prefix})
	if err != nil {
		return err
	}
	// The topology must outlive this process, so the harness is closed only on failure.
	if err := build(h, topo); err != nil {
		return errors.Join(err, h.Close())
	}
	return nil
}

func build(h *netns.Harness, topo Topology) error {
	out := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	defer out.Flush()
	fmt.Fprintln(out, "NAMESPACE\tROLE\tADDRESSES\tINTERFACE")
	var underlay *netns.Underlay
	if len(topo.Nodes) > 1 {
		var err error
		if underlay, err = h.NewUnderlay("underlay"); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\tunderlay\trouter .254 / ::254 on each subnet\tbr0...\n", underlay.Name)
	}
	for _, spec := range topo.Nodes {
		var node *netns.Node
		var err error
		if underlay == nil {
			node, err = h.NewNode(spec.Name)
		} else {
			for err == nil && spec.Subnet >= underlay.SubnetCount() {
				_, err = underlay.AddSubnet()
			}
			if err == nil {
				node, err = underlay.NewNodeOnSubnet(spec.Subnet, spec.Name)
			}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\tnode %s\t%s %s\t%s\n", node.Name, spec.Name, node.IPv4, node.IPv6, netns.UplinkName)
		for _, ps := range spec.Pods {
			pod, err := node.NewPod(netns.PodOptions{
				Namespace: ps.Namespace, Name: ps.Name, IPv4: ps.IPv4, IPv6: ps.IPv6,
				SkipHostWiring: topo.SkipHostWiring,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "%s\tpod %s/%s\t%s\t%s (host side, in %s)\n", pod.Name, pod.PodNamespace, pod.PodName,
				joinAddrs(pod.Addrs()), pod.HostInterface, node.Name)
		}
	}
	return nil
}

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}

func existingWithPrefix(prefix string) []string {
	entries, _ := os.ReadDir(netns.RunDir)
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	prefix := fs.String("prefix", "felisdemo", "namespace name prefix given to up")
	_ = fs.Parse(args)
	removed, err := netns.RemoveAll(*prefix)
	for _, name := range removed {
		fmt.Println("removed", name)
	}
	if err == nil && len(removed) == 0 {
		fmt.Printf("no namespace named %s-*\n", *prefix)
	}
	return err
}

func probe(args []string) (int, error) {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	prefix := fs.String("prefix", "felisdemo", "namespace name prefix given to up")
	from := fs.String("from", "", "source namespace, without the prefix (e.g. node1-default-client)")
	to := fs.String("to", "", "destination ADDR or ADDR:PORT ([v6]:PORT)")
	proto := fs.String("proto", "ICMP", "TCP, UDP or ICMP")
	timeout := fs.Duration("timeout", 2*time.Second, "probe time limit")
	_ = fs.Parse(args)
	if *from == "" || *to == "" {
		return 0, errors.New("probe: --from and --to are required")
	}
	dst, err := netip.ParseAddrPort(*to)
	if err != nil {
		addr, aerr := netip.ParseAddr(*to)
		if aerr != nil {
			return 0, fmt.Errorf("probe: --to %q: want ADDR or ADDR:PORT", *to)
		}
		dst = netip.AddrPortFrom(addr, 0)
	}
	h, err := netns.NewHarness(netns.Options{Prefix: *prefix})
	if err != nil {
		return 0, err
	}
	defer h.Close()
	ns, err := h.Attach(*prefix + "-" + *from)
	if err != nil {
		return 0, err
	}
	r := ns.ProbeTimeout(netns.Protocol(strings.ToUpper(*proto)), dst, *timeout)
	fmt.Println(r)
	switch r.Outcome {
	case netns.Allowed:
		return 0, nil
	case netns.Timeout, netns.Unreachable:
		return 3, nil
	case netns.Refused:
		return 4, nil
	default:
		return 1, nil
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	prefix := fs.String("prefix", "felisdemo", "namespace name prefix given to up")
	in := fs.String("in", "", "namespace to serve in, without the prefix (e.g. node1-default-server)")
	port := fs.Uint("port", 8080, "port")
	proto := fs.String("proto", "TCP", "TCP or UDP")
	_ = fs.Parse(args)
	if *in == "" {
		return errors.New("serve: --in is required")
	}
	h, err := netns.NewHarness(netns.Options{Prefix: *prefix})
	if err != nil {
		return err
	}
	defer h.Close()
	ns, err := h.Attach(*prefix + "-" + *in)
	if err != nil {
		return err
	}
	l, err := ns.Listen(netns.Protocol(strings.ToUpper(*proto)), uint16(*port))
	if err != nil {
		return err
	}
	fmt.Printf("echoing %s on port %d in %s; Ctrl-C to stop\n", l.Protocol, l.Port, ns.Name)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	fmt.Printf("served %d\n", l.Served())
	return nil
}
