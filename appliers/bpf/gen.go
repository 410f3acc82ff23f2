package bpf

//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip -target bpfel -type insn -cflags "-O2 -g -Wall -I/usr/include/x86_64-linux-gnu" policy ../../bpf-programs/policy.c
