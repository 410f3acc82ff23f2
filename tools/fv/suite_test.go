//go:build linux

package fv_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// knownBug labels specs that fail because of a felis bug described in the spec; the default run
// leaves them out (run them with -ginkgo.label-filter=known-bug).
const knownBug = "known-bug"

// dataplanes are the policy dataplanes every scenario runs against (--dataplane values);
// iptables and bpf join the list once their appliers exist.
var dataplanes = []string{"nftables"}

// felisBin is the felis binary BeforeSuite builds.
var felisBin string

func TestFV(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping the FV suite: it creates network namespaces and runs felis agent in them, which needs root (run e.g. sudo -E go test ./tools/fv/)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping the FV suite: the nft CLI is missing (tools/install-deps.sh installs it; the drift specs use it)")
	}
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	if suiteConfig.LabelFilter == "" {
		suiteConfig.LabelFilter = "!" + knownBug
	}
	RunSpecs(t, "felis real-packet FV", suiteConfig, reporterConfig)
}

var _ = BeforeSuite(func() {
	dir, err := os.MkdirTemp("", "felis-fv-bin-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, dir)
	felisBin = filepath.Join(dir, "felis")
	cmd := exec.Command("go", "build", "-o", felisBin, "github.com/felis-dev/felis/cmd/felis")
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "go build ./cmd/felis:\n%s", out)
})
