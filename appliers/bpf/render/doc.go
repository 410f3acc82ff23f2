// Package render turns a snapshot into the contents of the BPF policy program's maps: IP-set
// members as LPM-trie keys, one instruction stream per distinct endpoint direction program,
// and per-interface endpoint entries. It is pure: no I/O, no kernel.
package render
