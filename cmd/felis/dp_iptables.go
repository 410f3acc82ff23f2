//go:build linux

package main

import (
	"cmp"
	"context"
	"fmt"
	"os"

	"github.com/felis-dev/felis/appliers"
	"github.com/felis-dev/felis/appliers/bpf"
	"github.com/felis-dev/felis/appliers/iptables"
)

// iptablesBackend is --iptables-backend: which flavour of the iptables binaries to drive.
var iptablesBackend string

func init() {
	def := cmp.Or(os.Getenv("FELIS_IPTABLES_BACKEND"), iptables.BackendAuto)
	rootCmd.PersistentFlags().StringVar(&iptablesBackend, "iptables-backend", def,
		"iptables flavour for --dataplane iptables: legacy, nft or auto (detected as Felix does); default from $FELIS_IPTABLES_BACKEND")
	policyDataplanes["iptables"] = func() (appliers.Dataplane, error) {
		if err := bpf.Cleanup(context.Background(), os.Getenv("FELIS_BPF_PIN_ROOT")); err != nil {
			return nil, fmt.Errorf("removing the bpf dataplane's state: %w", err)
		}
		k, err := iptables.NewKernel(context.Background(), iptablesBackend)
		if err != nil {
			return nil, err
		}
		d := iptables.NewDataplane(k)
		removed := false
		// Switching from the nftables mode, or between iptables flavours: the other mode's
		// state goes once, before the first full sync.
		d.BeforeFull = func(ctx context.Context) error {
			if removed {
				return nil
			}
			if err := iptables.RemoveNFTablesTable(0); err != nil {
				return err
			}
			if err := k.RemoveOtherBackend(ctx); err != nil {
				return err
			}
			removed = true
			return nil
		}
		return d, nil
	}
}
