//go:build linux

package iptables

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"

	gnft "github.com/google/nftables"

	nftrender "github.com/felis-dev/felis/appliers/nftables/render"
)

// Cleanup removes felis's iptables state (hook rules, felis chains, felis ipsets) from both
// iptables flavours in the current network namespace: the nftables mode calls it at start so
// switching modes leaves nothing behind. Missing binaries mean there is nothing to remove.
// Options (WithNetNS) pick another network namespace.
func Cleanup(ctx context.Context, opts ...KernelOption) error {
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil
	}
	var errs []error
	for _, b := range []string{BackendLegacy, BackendNFT} {
		if _, err := exec.LookPath(binaryFor(4, b, "save")); err != nil {
			continue
		}
		k, err := NewKernel(ctx, b, opts...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removeRules(ctx, k); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		k := &Kernel{backend: BackendNFT}
		for _, o := range opts {
			o(k)
		}
		st := NewState()
		out, err := k.IPSetSave(ctx)
		if err == nil {
			err = ParseIPSetSave(st, out)
		}
		if err == nil {
			err = Apply(ctx, k, Plan(Ruleset{}, st))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove felis ipsets: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeRules removes felis's chains and hook rules from k's flavour, keeping the ipsets
// (both flavours share them).
func removeRules(ctx context.Context, k *Kernel) error {
	st, err := Observe(ctx, k)
	if err != nil {
		return err
	}
	st.Sets = map[string]Set{}
	if err := Apply(ctx, k, Plan(Ruleset{}, st)); err != nil {
		return fmt.Errorf("remove felis iptables-%s rules: %w", k.backend, err)
	}
	return nil
}

// RemoveOtherBackend removes felis's chains and hook rules from the flavour k does not use
// (a node that switched between legacy and nft keeps no stale rules there); a missing
// binary means there is nothing to remove.
func (k *Kernel) RemoveOtherBackend(ctx context.Context) error {
	other := &Kernel{backend: BackendNFT, netns: k.netns}
	if k.backend == BackendNFT {
		other.backend = BackendLegacy
	}
	if _, err := exec.LookPath(binaryFor(4, other.backend, "save")); err != nil {
		return nil
	}
	return removeRules(ctx, other)
}

// RemoveNFTablesTable deletes the nftables mode's tables (inet felis, and inet felis-svc
// for services) that exist, in one transaction, in the network namespace of netnsFd (or the
// current one when it is 0).
func RemoveNFTablesTable(netnsFd int) error {
	var opts []gnft.ConnOption
	if netnsFd > 0 {
		opts = append(opts, gnft.WithNetNSFd(netnsFd))
	}
	c, err := gnft.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(gnft.TableFamilyINet)
	if errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EAFNOSUPPORT) {
		return nil // a kernel without nf_tables holds no nftables table
	}
	if err != nil {
		return fmt.Errorf("nftables: list tables: %w", err)
	}
	var names []string
	for _, t := range tables {
		for _, id := range nftrender.Tables {
			if t.Name == id.Name() {
				c.DelTable(t)
				names = append(names, "inet "+t.Name)
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}
