//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Conntrack timeouts, mirrored from bpf-programs/ct.h for the sweep (TestConntrackSweep
// checks both sides at the same boundaries).
const (
	ctCreationGrace   = 10 * time.Second
	ctTCPSynSent      = 20 * time.Second
	ctTCPEstablished  = time.Hour
	ctTCPFinsSeen     = 30 * time.Second
	ctTCPResetSeen    = 40 * time.Second
	ctUDPTimeout      = 60 * time.Second
	ctGenericTimeout  = 10 * time.Minute
	ctICMPTimeout     = 5 * time.Second
	fragTimeout       = 30 * time.Second
	ctFlagEstablished = 1
	ctFlagFINs        = 2 | 4
	ctFlagRST         = 8
)

// ctExpired is ct.h's ct_expired: Felix's expiry rule for a flow of protocol proto. Times
// are bpf_ktime_get_ns (CLOCK_MONOTONIC) nanoseconds; differences wrap as in the program.
func ctExpired(proto uint8, v *policyCtVal, now uint64) bool {
	if time.Duration(now-v.Created) < ctCreationGrace {
		return false
	}
	age := time.Duration(now - v.LastSeen)
	switch proto {
	case 6:
		if v.Flags&ctFlagRST != 0 && age > ctTCPResetSeen {
			return true
		}
		if v.Flags&ctFlagFINs == ctFlagFINs && age > ctTCPFinsSeen {
			return true
		}
		if v.Flags&ctFlagEstablished != 0 {
			return age > ctTCPEstablished
		}
		return age > ctTCPSynSent
	case 17:
		return age > ctUDPTimeout
	case 1, 58:
		return age > ctICMPTimeout
	default:
		return age > ctGenericTimeout
	}
}

// monotonicNanos reads the clock bpf_ktime_get_ns reads.
func monotonicNanos() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("clock_gettime(CLOCK_MONOTONIC): %w", err)
	}
	return uint64(ts.Nano()), nil
}

// sweepConntrack deletes expired flows from fct_v2 and fragment records older than the
// reassembly timeout from ffrag_v1. The program already treats them as gone; deleting them
// keeps the LRU maps' room for live entries. A flow is re-read just before its deletion, so
// one the datapath refreshed meanwhile stays. It returns how many entries it deleted.
func (d *Dataplane) sweepConntrack() (int, error) {
	now, err := monotonicNanos()
	if err != nil {
		return 0, err
	}
	var dead []policyCtKey
	if err := batchRead(d.objs.FctV2, func(k *policyCtKey, v *policyCtVal) {
		if ctExpired(k.Proto, v, now) {
			dead = append(dead, *k)
		}
	}); err != nil {
		return 0, fmt.Errorf("reading fct_v2: %w", err)
	}
	var v policyCtVal
	n := 0
	for i := range dead {
		if err := d.objs.FctV2.Lookup(&dead[i], &v); err != nil || !ctExpired(dead[i].Proto, &v, now) {
			continue
		}
		if err := d.objs.FctV2.Delete(&dead[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("deleting an expired flow from fct_v2: %w", err)
		}
		n++
	}
	var stale []policyFragKey
	if err := batchRead(d.objs.FfragV1, func(k *policyFragKey, v *policyFragVal) {
		if time.Duration(now-v.Seen) > fragTimeout {
			stale = append(stale, *k)
		}
	}); err != nil {
		return n, fmt.Errorf("reading ffrag_v1: %w", err)
	}
	var fv policyFragVal
	for i := range stale {
		if err := d.objs.FfragV1.Lookup(&stale[i], &fv); err != nil || time.Duration(now-fv.Seen) <= fragTimeout {
			continue
		}
		if err := d.objs.FfragV1.Delete(&stale[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("deleting a stale fragment record from ffrag_v1: %w", err)
		}
		n++
	}
	return n, nil
}

// batchRead calls f for every entry of m, read with BPF_MAP_LOOKUP_BATCH in chunks (one
// system call per chunk instead of two per entry).
func batchRead[K, V any](m *ebpf.Map, f func(*K, *V)) error {
	const chunk = 4096
	keys, vals := make([]K, chunk), make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			f(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
