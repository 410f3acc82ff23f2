// Package render turns a snapshot.Snapshot into the desired felis-owned nftables tables
// (policy, and services in their own table): sets, verdict maps and chains as plain data whose
// String() is nft syntax. It is pure (no kernel imports, no I/O); the parent package diffs and
// applies what it returns.
package render
