// Package synth generates synthetic clusters as model objects, at the scales Felix's own
// calc-graph benchmarks use, for felis's benchmarks and scale tests. Output is deterministic
// for a given seed.
package synth
