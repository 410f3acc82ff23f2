package iptables

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// Backends: the two flavours of the iptables binaries Debian installs side by side.
const (
	BackendLegacy = "legacy"
	BackendNFT    = "nft"
	BackendAuto   = "auto"
)

// lockWait is how long a restore waits for the xtables lock (seconds).
const lockWait = "10"

// Kernel runs the real binaries: iptables-<backend>-save/-restore, ip6tables-*, ipset.
type Kernel struct {
	backend string
	netns   string
}

// KernelOption configures a Kernel.
type KernelOption func(*Kernel)

// WithNetNS runs every command inside the named network namespace (ip netns exec NAME).
func WithNetNS(name string) KernelOption { return func(k *Kernel) { k.netns = name } }

// NewKernel returns a kernel runner for backend (legacy, nft or auto: detected as Felix does).
func NewKernel(ctx context.Context, backend string, opts ...KernelOption) (*Kernel, error) {
	k := &Kernel{}
	for _, o := range opts {
		o(k)
	}
	switch strings.ToLower(backend) {
	case BackendLegacy, BackendNFT:
		k.backend = strings.ToLower(backend)
	case BackendAuto, "":
		k.backend = k.detect(ctx)
	default:
		return nil, fmt.Errorf("iptables backend %q: want legacy, nft or auto", backend)
	}
	return k, nil
}

// Backend is the flavour in use: legacy or nft.
func (k *Kernel) Backend() string { return k.backend }

// detect follows Felix (and the kubernetes iptables-wrapper): 10 or more rules in the legacy
// tables (both families) mean legacy; otherwise nft if it holds more rules than legacy.
func (k *Kernel) detect(ctx context.Context) string {
	count := func(flavour string) int {
		n := 0
		for _, fam := range []int{4, 6} {
			out, err := k.run(ctx, nil, binaryFor(fam, flavour, "save"))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(out, "\n") {
				if strings.HasPrefix(l, "-") {
					n++
				}
			}
		}
		return n
	}
	legacy := count(BackendLegacy)
	if legacy >= 10 {
		return BackendLegacy
	}
	if count(BackendNFT) > legacy {
		return BackendNFT
	}
	return BackendLegacy
}

func binaryFor(fam int, flavour, verb string) string {
	return binary(fam) + "-" + flavour + "-" + verb
}

func (k *Kernel) run(ctx context.Context, stdin []byte, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if k.netns != "" {
		argv = append([]string{"ip", "netns", "exec", k.netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Save implements Runner.
func (k *Kernel) Save(ctx context.Context, family int) (string, error) {
	return k.run(ctx, nil, binaryFor(family, k.backend, "save"))
}

// Restore implements Runner: --noflush, waiting for the xtables lock.
func (k *Kernel) Restore(ctx context.Context, family int, script string) error {
	_, err := k.run(ctx, []byte(script), binaryFor(family, k.backend, "restore"), "--noflush", "--wait", lockWait)
	if err != nil {
		return fmt.Errorf("%w\nscript:\n%s", err, excerpt(script))
	}
	return nil
}

// IPSetSave implements Runner.
func (k *Kernel) IPSetSave(ctx context.Context) (string, error) {
	return k.run(ctx, nil, "ipset", "save")
}

// IPSetRestore implements Runner.
func (k *Kernel) IPSetRestore(ctx context.Context, script string) error {
	_, err := k.run(ctx, []byte(script), "ipset", "restore")
	if err != nil {
		return fmt.Errorf("%w\nscript:\n%s", err, excerpt(script))
	}
	return nil
}

func excerpt(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "\n..."
	}
	return s
}
