// Package iptables programs felis policy through iptables and ipset: Render turns a snapshot
// into felis-owned chains, hook rules and IP sets (pure), Plan diffs them against observed or
// committed state, and a Runner (the kernel's binaries, legacy or nf_tables, or the Fake) applies them.
package iptables
