//go:build linux

package nftables

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/felis-dev/felis/appliers/nftables/render"
	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// socketBuffer is the send and receive buffer of the netlink socket: one batch of a full
// resync is several MB, and the kernel acks every message of it.
const socketBuffer = 128 << 20

// elementBytes bounds the encoded size of the elements of one netlink message. The element
// list is one attribute, whose length field is 16 bits: past 64 KiB it wrapped, and the
// kernel read a truncated list without complaint (10,000 frontend map elements sent in
// chunks of 2,048 arrived as 1,805).
const elementBytes = 32 << 10

// elementSize is an upper bound of one element's encoded size (attribute headers, padding,
// key, data, flags).
func elementSize(e gnft.SetElement) int {
	n := 64 + len(e.Key) + len(e.KeyEnd) + len(e.Val)
	if e.VerdictData != nil {
		n += 32 + len(e.VerdictData.Chain)
	}
	return n
}

// chunkElements splits elements into lists that each fit one netlink attribute.
func chunkElements(els []gnft.SetElement) [][]gnft.SetElement {
	var out [][]gnft.SetElement
	start, size := 0, 0
	for i, e := range els {
		n := elementSize(e)
		if i > start && size+n > elementBytes {
			out = append(out, els[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(els) {
		out = append(out, els[start:])
	}
	return out
}

// Kernel is the real dataplane: the felis inet tables through nftables netlink.
type Kernel struct {
	mu      sync.Mutex
	opts    kernelOptions
	conn    *gnft.Conn    // reads (and dumps) through go-nftables
	raw     *netlink.Conn // batches, sent by sendBatch
	seq     uint32        // last sequence number used on raw
	rec     *recorder     // captures what enc marshals
	enc     *gnft.Conn    // go-nftables as a marshaller only
	tables  []*gnft.Table // by render.TableID
	replies []byte        // sendBatch's reply buffer
}

// KernelOption configures NewKernel.
type KernelOption func(*kernelOptions)

type kernelOptions struct{ netnsFd int }

// WithNetNSFd targets the network namespace open at fd instead of the caller's.
func WithNetNSFd(fd int) KernelOption { return func(o *kernelOptions) { o.netnsFd = fd } }

// NewKernel opens a lasting nftables netlink connection. Close releases it.
func NewKernel(opts ...KernelOption) (*Kernel, error) {
	o := kernelOptions{netnsFd: -1}
	for _, opt := range opts {
		opt(&o)
	}
	conn, err := dial(o)
	if err != nil {
		return nil, err
	}
	cfg := &netlink.Config{}
	if o.netnsFd >= 0 {
		cfg.NetNS = o.netnsFd
	}
	raw, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err == nil {
		err = bigBuffers(raw)
	}
	if err == nil {
		// Error replies then carry the rejected message's header only, not the whole
		// (possibly huge) message, so sendBatch's buffer always holds them.
		err = raw.SetOption(netlink.CapAcknowledge, true)
	}
	if err != nil {
		_ = conn.CloseLasting()
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	rec, enc, err := newRecorder()
	if err != nil {
		_ = conn.CloseLasting()
		_ = raw.Close()
		return nil, err
	}
	k := &Kernel{opts: o, conn: conn, raw: raw, rec: rec, enc: enc, tables: make([]*gnft.Table, len(render.Tables))}
	for _, id := range render.Tables {
		k.tables[id] = &gnft.Table{Family: gnft.TableFamilyINet, Name: id.Name()}
	}
	return k, nil
}

// bigBuffers sizes the socket for a full-table batch (several MB in one sendmsg).
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		// The FORCE variants pass the sysctl caps (we hold CAP_NET_ADMIN); fall back if not.
		for _, o := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[0], socketBuffer); e != nil {
				serr = cmp.Or(serr, unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, o[1], socketBuffer))
			}
		}
	})
	return cmp.Or(err, serr)
}

func dial(o kernelOptions) (*gnft.Conn, error) {
	copts := []gnft.ConnOption{gnft.AsLasting(), gnft.WithSockOptions(bigBuffers)}
	if o.netnsFd >= 0 {
		copts = append(copts, gnft.WithNetNSFd(o.netnsFd))
	}
	conn, err := gnft.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink: %w", err)
	}
	return conn, nil
}

// Close closes the netlink connections.
func (k *Kernel) Close() error {
	return errors.Join(k.conn.CloseLasting(), k.enc.CloseLasting(), k.raw.Close())
}

// Apply commits ops in one netlink batch: the kernel applies all of them or none. The error
// names the op the kernel rejected and its errno.
func (k *Kernel) Apply(_ context.Context, ops []Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, err := k.encode(ops)
	if err != nil {
		return err
	}
	return k.commit(b)
}

// batch is a list of ops marshalled into netlink messages; opOf[i] is the op msgs[i] came from.
type batch struct {
	ops  []Op
	msgs []netlink.Message
	opOf []int
}

// encode marshals ops (user space only: nothing is sent).
func (k *Kernel) encode(ops []Op) (batch, error) {
	rec, enc := k.rec, k.enc
	c := &compiler{conn: enc, sets: map[string]*gnft.Set{}}
	b := batch{ops: ops}
	for i, op := range ops {
		if err := k.queue(c, op); err != nil {
			_ = enc.Flush() // drop what this batch queued
			rec.take()
			return batch{}, fmt.Errorf("op %d (%s): %w", i, op.short(), err)
		}
		if err := enc.Flush(); err != nil {
			rec.take()
			return batch{}, fmt.Errorf("op %d (%s): marshal: %w", i, op.short(), err)
		}
		for _, m := range rec.take() {
			b.msgs = append(b.msgs, m)
			b.opOf = append(b.opOf, i)
		}
	}
	return b, nil
}

// commit sends an encoded batch as one transaction and waits for the kernel's verdict.
func (k *Kernel) commit(b batch) error {
	if len(b.msgs) == 0 {
		return nil
	}
	seq := k.seq + 1
	k.seq += uint32(len(b.msgs)) + 3
	if k.replies == nil {
		k.replies = make([]byte, replyBuffer)
	}
	errs, err := sendBatch(k.raw, b.msgs, b.opOf, seq, k.replies)
	if err != nil {
		return fmt.Errorf("nftables batch of %d ops: %w", len(b.ops), err)
	}
	if len(errs) > 0 {
		e := errs[0]
		what := "an unknown message"
		if e.op >= 0 {
			what = fmt.Sprintf("op %d (%s)", e.op, b.ops[e.op].short())
		}
		return fmt.Errorf("nftables batch of %d ops rolled back: kernel rejected %s: %w", len(b.ops), what, e.errno)
	}
	return nil
}

func (k *Kernel) queue(c *compiler, op Op) error {
	if int(op.Table) >= len(k.tables) {
		return fmt.Errorf("table %d: %w", op.Table, ErrInvalid)
	}
	t := k.tables[op.Table]
	c.table = t
	conn := c.conn
	switch op.Verb {
	case AddTable:
		conn.AddTable(t)
	case AddSet:
		s := nftSet(t, op.Set)
		if err := conn.AddSet(s, nil); err != nil {
			return err
		}
		c.remember(s)
		for _, ch := range chunkElements(setElements(op.Set, op.Set.Elements)) {
			if err := conn.SetAddElements(s, ch); err != nil {
				return err
			}
		}
	case DeleteSet:
		conn.DelSet(&gnft.Set{Table: t, Name: op.Name})
	case FlushSet:
		conn.FlushSet(&gnft.Set{Table: t, Name: op.Name})
	case AddSetElements, DeleteSetElements:
		if op.Set == nil {
			return fmt.Errorf("element op without its set's definition: %w", ErrInvalid)
		}
		s := nftSet(t, op.Set)
		if known := c.known(s.Name); known != nil {
			s = known
		}
		for _, ch := range chunkElements(setElements(op.Set, op.Elements)) {
			var err error
			if op.Verb == AddSetElements {
				err = conn.SetAddElements(s, ch)
			} else {
				err = conn.SetDeleteElements(s, ch)
			}
			if err != nil {
				return err
			}
		}
	case AddMap:
		m := nftMap(t, op.Name, mapFamily(op))
		if err := conn.AddSet(m, nil); err != nil {
			return err
		}
		c.remember(m)
		for _, ch := range chunkElements(nftMapElements(op.Map.Elements)) {
			if err := conn.SetAddElements(m, ch); err != nil {
				return err
			}
		}
	case DeleteMap:
		conn.DelSet(&gnft.Set{Table: t, Name: op.Name})
	case AddMapElements, DeleteMapElements:
		m := nftMap(t, op.Name, mapFamily(op))
		if known := c.known(m.Name); known != nil {
			m = known
		}
		for _, ch := range chunkElements(nftMapElements(op.MapElements)) {
			var err error
			if op.Verb == AddMapElements {
				err = conn.SetAddElements(m, ch)
			} else {
				err = conn.SetDeleteElements(m, ch)
			}
			if err != nil {
				return err
			}
		}
	case AddChain, ReplaceChain:
		ch := nftChain(t, op.Chain)
		if op.Verb == AddChain {
			conn.AddChain(ch)
		} else {
			conn.FlushChain(ch)
		}
		for i, r := range op.Chain.Rules {
			rule, err := c.rule(ch, r, ruleUserData(op.Chain, i))
			if err != nil {
				return fmt.Errorf("chain %s rule %d: %w", op.Name, i, err)
			}
			conn.AddRule(rule)
		}
	case DeleteChain:
		conn.DelChain(&gnft.Chain{Table: t, Name: op.Name})
	default:
		return fmt.Errorf("verb %q: %w", op.Verb, ErrInvalid)
	}
	return nil
}

// Observe reads the felis tables back: sets and maps with their elements, chains with their
// hook, and each chain's level and hash from its rules' userdata (empty when the rules do
// not carry one consistent hash, i.e. someone edited the chain). It returns nil when neither
// table exists, and lists a missing one in Missing.
func (k *Kernel) Observe(context.Context) (*render.Table, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	tables, err := k.conn.ListTablesOfFamily(gnft.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var out render.Table
	var present []render.TableID
	for _, id := range render.Tables {
		if slices.ContainsFunc(tables, func(t *gnft.Table) bool { return t.Name == id.Name() }) {
			present = append(present, id)
		} else {
			out.Missing = append(out.Missing, id)
		}
	}
	if len(present) == 0 {
		return nil, nil
	}
	chains, err := k.conn.ListChainsOfTableFamily(gnft.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, id := range present {
		if err := k.observeTable(&out, id, chains); err != nil {
			return nil, fmt.Errorf("table inet %s: %w", id.Name(), err)
		}
	}
	out.Sort()
	return &out, nil
}

// observeTable appends one table's sets, maps and chains (from all of the family's) to out.
func (k *Kernel) observeTable(out *render.Table, id render.TableID, chains []*gnft.Chain) error {
	table := k.tables[id]
	sets, err := k.conn.GetSets(table)
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		if s.Anonymous {
			continue
		}
		s.Table = table
		if s.HasTimeout || s.Dynamic {
			// Affinity sets: packets own the elements, and there may be one per client.
			set := observeTimeoutSet(s)
			set.Table = id
			out.Sets = append(out.Sets, set)
			continue
		}
		els, err := k.conn.GetSetElements(s)
		if err != nil {
			return fmt.Errorf("list elements of %s: %w", s.Name, err)
		}
		if s.IsMap {
			m := observeMap(s, els)
			m.Table = id
			out.Maps = append(out.Maps, m)
			continue
		}
		set := observeSet(s, els)
		set.Table = id
		out.Sets = append(out.Sets, set)
	}
	udata, err := k.dumpRuleUserData(table.Name)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != table.Name {
			continue
		}
		c := observeChain(ch, udata[ch.Name])
		c.Table = id
		out.Chains = append(out.Chains, c)
	}
	return nil
}

func observeMap(s *gnft.Set, els []gnft.SetElement) render.Map {
	// go-nftables overwrites a verdict map's key type with the data type when it decodes
	// it, so the frontend maps are known by their names and their keys' lengths.
	m := render.Map{Name: s.Name, Family: frontendMapFamily(s.Name)}
	for _, e := range els {
		kind, chain := decodeVerdict(e.Val)
		if kind != expr.VerdictGoto {
			chain = fmt.Sprintf("%s (verdict %d)", chain, kind) // never desired: replaced
		}
		if m.Family != 0 || len(e.Key) == 12 || len(e.Key) == 24 {
			m.Elements = append(m.Elements, observeFrontendElement(e.Key, chain))
			continue
		}
		m.Elements = append(m.Elements, render.MapElement{Interface: string(bytes.TrimRight(e.Key, "\x00")), Chain: chain})
	}
	slices.SortFunc(m.Elements, render.MapElement.Compare)
	return m
}

// decodeVerdict parses NFTA_DATA_VERDICT's nested attributes: code and chain.
func decodeVerdict(b []byte) (expr.VerdictKind, string) {
	var kind expr.VerdictKind
	var chain string
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			break
		}
		v := b[4:l]
		switch typ {
		case unix.NFTA_VERDICT_CODE:
			if len(v) >= 4 {
				kind = expr.VerdictKind(int32(binary.BigEndian.Uint32(v)))
			}
		case unix.NFTA_VERDICT_CHAIN:
			chain = string(bytes.TrimRight(v, "\x00"))
		}
		b = b[min(len(b), (l+3)&^3):]
	}
	return kind, chain
}

func observeSet(s *gnft.Set, els []gnft.SetElement) render.Set {
	out := render.Set{Name: s.Name}
	n := s.KeyType.Bytes
	switch n {
	case 4, 16:
		out.Family = 4
		if n == 16 {
			out.Family = 6
		}
		if !s.Interval {
			out.Drift = true
		}
		var ok bool
		out.Elements, ok = intervalsToElements(els, int(n))
		out.Drift = out.Drift || !ok
	case 8, 32:
		out.Family, out.Pair = 4, true
		if n == 32 {
			out.Family = 6
		}
		a := int(n) / 2
		for _, e := range els {
			if len(e.Key) != int(n) {
				out.Drift = true
				continue
			}
			x, _ := netip.AddrFromSlice(e.Key[:a])
			y, _ := netip.AddrFromSlice(e.Key[a:])
			out.Elements = append(out.Elements, render.Element{Prefix: netip.PrefixFrom(x, x.BitLen()), Peer: y})
		}
		slices.SortFunc(out.Elements, render.Element.Compare)
	case 12, 24:
		out.Family, out.Concat = 4, true
		if n == 24 {
			out.Family = 6
		}
		a := int(n) - 8
		for _, e := range els {
			if len(e.Key) != int(n) {
				out.Drift = true
				continue
			}
			addr, _ := netip.AddrFromSlice(e.Key[:a])
			out.Elements = append(out.Elements, render.Element{Prefix: netip.PrefixFrom(addr, addr.BitLen()), Proto: e.Key[a], Port: binary.BigEndian.Uint16(e.Key[a+4:])})
		}
		slices.SortFunc(out.Elements, render.Element.Compare)
	default:
		out.Drift = true
	}
	return out
}

// intervalsToElements rebuilds prefixes from interval elements, which the kernel lists in
// reverse order with the end markers included. ok is false when an interval is not a prefix.
func intervalsToElements(els []gnft.SetElement, n int) (out []render.Element, ok bool) {
	type point struct {
		addr netip.Addr
		end  bool
	}
	var pts []point
	for _, e := range els {
		a, valid := netip.AddrFromSlice(e.Key)
		if !valid || len(e.Key) != n {
			return nil, false
		}
		pts = append(pts, point{a, e.IntervalEnd})
	}
	// At one address an end marker closes the previous interval before a start opens the next.
	slices.SortFunc(pts, func(x, y point) int {
		if c := x.addr.Compare(y.addr); c != 0 {
			return c
		}
		if x.end == y.end {
			return 0
		}
		if x.end {
			return -1
		}
		return 1
	})
	ok = true
	var start netip.Addr
	open := false
	flush := func(end netip.Addr, top bool) {
		p, good := rangeToPrefix(start, end, top)
		if !good {
			ok = false
			return
		}
		out = append(out, render.Element{Prefix: p})
	}
	for _, p := range pts {
		switch {
		case p.end && open:
			flush(p.addr, false)
			open = false
		case p.end:
			// A lone end marker (nft writes one at the bottom of the space): no interval.
		case open:
			ok = false // two starts in a row
			start = p.addr
		default:
			start, open = p.addr, true
		}
	}
	if open {
		flush(netip.Addr{}, true)
	}
	return out, ok
}

// rangeToPrefix returns the prefix covering exactly [start, end) (or [start, top of space]).
func rangeToPrefix(start, end netip.Addr, top bool) (netip.Prefix, bool) {
	for bits := 0; bits <= start.BitLen(); bits++ {
		p := netip.PrefixFrom(start, bits)
		if p.Masked().Addr() != start {
			continue
		}
		next, ok := prefixEnd(p)
		if top && !ok || !top && ok && next == end {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

var hookNames = map[gnft.ChainHook]string{
	*gnft.ChainHookPrerouting: "prerouting", *gnft.ChainHookInput: "input", *gnft.ChainHookForward: "forward",
	*gnft.ChainHookOutput: "output", *gnft.ChainHookPostrouting: "postrouting",
}

// dumpRuleUserData lists the userdata of every rule in one felis table, by chain, in rule
// order, with one netlink dump. go-nftables lists rules one chain at a time, and the kernel
// walks the whole table for each such request: quadratic in the table's size.
func (k *Kernel) dumpRuleUserData(table string) (map[string][][]byte, error) {
	cfg := &netlink.Config{}
	if k.opts.netnsFd >= 0 {
		cfg.NetNS = k.opts.netnsFd
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{{Type: unix.NFTA_RULE_TABLE, Data: []byte(table + "\x00")}})
	if err != nil {
		return nil, err
	}
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETRULE),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return nil, err
	}
	out := map[string][][]byte{}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return nil, err
		}
		var chain string
		var ud []byte
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				chain = ad.String()
			case unix.NFTA_RULE_USERDATA:
				ud = ad.Bytes()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		out[chain] = append(out[chain], ud)
	}
	return out, nil
}

func observeChain(ch *gnft.Chain, rules [][]byte) render.Chain {
	out := render.Chain{Name: ch.Name, Level: levelFromName(ch.Name)}
	if ch.Hooknum != nil {
		b := &render.BaseChain{Type: string(ch.Type), Hook: hookNames[*ch.Hooknum]}
		if b.Hook == "" {
			b.Hook = fmt.Sprintf("hook%d", *ch.Hooknum)
		}
		if ch.Priority != nil {
			b.Priority = int(*ch.Priority)
		}
		if ch.Policy != nil && *ch.Policy != gnft.ChainPolicyAccept {
			b.Type += " (policy drop)" // never desired: the chain is re-created
		}
		out.Base, out.Level = b, render.LevelBase
	}
	hash, level, ok := "", 0, len(rules) > 0
	for i, r := range rules {
		c, found := userdata.GetString(r, userdata.TypeComment)
		f := strings.Fields(c)
		if !found || len(f) != 4 || f[0] != "felis" || f[3] != fmt.Sprintf("%d/%d", i, len(rules)) {
			ok = false
			break
		}
		l, err := strconv.Atoi(f[1])
		if err != nil || (i > 0 && (f[2] != hash || l != level)) {
			ok = false
			break
		}
		hash, level = f[2], l
	}
	if ok {
		out.Hash = hash
		if out.Base == nil {
			out.Level = level
		}
	}
	return out
}

// levelFromName recovers a chain's level from its name when its rules no longer say.
func levelFromName(name string) int {
	switch {
	case strings.HasPrefix(name, "pol-"), strings.HasPrefix(name, "prof-"), strings.HasPrefix(name, "sep-"):
		return render.LevelPolicy
	case strings.HasPrefix(name, "svc-") && strings.HasSuffix(name, "-ext"):
		return render.LevelEndpoint
	case strings.HasPrefix(name, "svc-"):
		return render.LevelTier
	case strings.Contains(name, "-t") && strings.Trim(name[strings.LastIndex(name, "-t")+2:], "0123456789") == "":
		return render.LevelTier
	}
	return render.LevelEndpoint
}
