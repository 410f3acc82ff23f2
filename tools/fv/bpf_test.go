//go:build linux

package fv_test

import (
	"os"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

// The BPF dataplane runs the same policy scenario table as nftables. Its maps and links are
// pinned on a bpffs mounted for each spec (FELIS_BPF_PIN_ROOT), unmounted afterwards, which
// also releases the pinned TCX links.
var _ = Describe("felis agent against real packets, dataplane bpf", Label("bpf"), func() {
	BeforeEach(func() {
		dir := GinkgoT().TempDir()
		Expect(unix.Mount("bpf", dir, "bpf", 0, "mode=0700")).To(Succeed())
		DeferCleanup(func() { Expect(unix.Unmount(dir, unix.MNT_DETACH)).To(Succeed()) })
		Expect(os.Setenv("FELIS_BPF_PIN_ROOT", dir)).To(Succeed())
		DeferCleanup(os.Unsetenv, "FELIS_BPF_PIN_ROOT")
	})

	DescribeTable("policy scenarios agree with felis reach",
		func(sc scenario) { runScenario("bpf", sc) },
		policyScenarios)

	Describe("attached with clsact + cls_bpf (the fallback for kernels without TCX)", func() {
		BeforeEach(func() {
			Expect(os.Setenv("FELIS_BPF_ATTACH", "clsact")).To(Succeed())
			DeferCleanup(os.Unsetenv, "FELIS_BPF_ATTACH")
		})
		DescribeTable("policy scenarios agree with felis reach",
			func(sc scenario) { runScenario("bpf", sc) },
			policyScenarios[1], policyScenarios[6], policyScenarios[7])
	})
})
