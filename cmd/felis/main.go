// Command felis is the node agent and its tools: agent, snapshot, plan, reach, validate.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the felis command; each subcommand registers itself from its own file's init.
var rootCmd = &cobra.Command{
	Use:   "felis",
	Short: "Kubernetes network policy and pod routing agent speaking the Calico API",
	Long: `felis computes the full desired dataplane state of a node from Calico and Kubernetes
resources, previews changes before rollout, and programs nftables, iptables, eBPF and routes.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

// exitError carries a process exit code through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	if err := rootCmd.Execute(); err != nil {
		if ee, ok := err.(exitError); ok {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "felis:", err)
		os.Exit(1)
	}
}
