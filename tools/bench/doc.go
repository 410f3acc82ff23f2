// Package bench holds felis's scale benchmarks: store load plus full derivation of the
// synthetic clusters in tools/synth, at the scales Felix's calc-graph benchmarks use, and
// the cost of one cycle after a single change. Run with `make bench-derive`.
package bench
