//go:build linux

package bpf

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// generated builds what a per-endpoint program generator would emit for n rules that each
// match one TCP destination port (IPv4, no options): load the port, compare, jump. It is the
// baseline for the interpreted design in BenchmarkPacketPath/deny-after-n-port-rules.
func generated(n int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 76, asm.Word), // skb->data
		asm.LoadMem(asm.R3, asm.R1, 80, asm.Word), // skb->data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 38),
		asm.JGT.Reg(asm.R4, asm.R3, "deny"),
		asm.LoadMem(asm.R5, asm.R2, 36, asm.Half), // TCP destination port, network order
	}
	for i := range n {
		p := uint16(81 + i)
		insns = append(insns, asm.JEq.Imm(asm.R5, int32(p>>8|p<<8), "allow"))
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 2).WithSymbol("deny"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("allow"),
		asm.Return(),
	)
}

func loadGenerated(b *testing.B, n int) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: generated(n)})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkGenerated: the packet cost of generated code for n non-matching port rules, and
// the load (verification) time of such a program, which a generator pays per endpoint and per
// policy change.
func BenchmarkGenerated(b *testing.B) {
	if _, dir := openTest(b); dir == "" {
		return
	}
	pkt := frame(packetTo80())
	for _, n := range []int{1, 10, 100, 1000} {
		prog := loadGenerated(b, n)
		b.Run(fmt.Sprintf("deny-after-%d-port-rules", n), func(b *testing.B) { benchProg(b, prog, pkt, tcShot) })
		prog.Close()
	}
	for _, n := range []int{100, 2000} {
		b.Run(fmt.Sprintf("load-%d-rules", n), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				t := time.Now()
				loadGenerated(b, n).Close()
				total += time.Since(t)
			}
			b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/load")
		})
	}
}
