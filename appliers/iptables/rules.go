package iptables

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	nft "github.com/felis-dev/felis/appliers/nftables/render"
	"github.com/felis-dev/felis/snapshot"
)

// errNever reports a rule that cannot match in this family (so it is left out).
var errNever = errors.New("never matches")

// maxMultiport is how many ports one multiport match holds (a range counts twice).
const maxMultiport = 15

var (
	acceptMarkSet   = fmt.Sprintf("-j MARK --set-xmark %#x/%#x", AcceptMark, AcceptMark)
	acceptMarkCheck = fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", AcceptMark, AcceptMark)
)

// rule translates one nftables rule into iptables rule bodies for family fam. An nftables
// accept becomes RETURN in a base chain (which ends felis's part of the hook) and the accept
// mark plus RETURN below it; every jump is followed by a return when the mark is set.
func (t *translator) rule(fam int, table string, r nft.Rule, base bool) ([]string, error) {
	var groups [][]string // each group: alternatives; a rule variant picks one of each
	fixed := func(s string) { groups = append(groups, []string{s}) }
	var effects []string
	var verdict nft.Stmt
	var proto *uint8
	passOnly := false
	srcAddr, dstAddr := false, false
	stmts := r.Stmts
	for i := 0; i < len(stmts); i++ {
		switch s := stmts[i].(type) {
		case nft.NfProto:
			if s.Family != fam {
				return nil, nil
			}
		case nft.L4Proto:
			switch {
			case !s.Neg && proto == nil:
				p := s.Proto
				proto = &p
				fixed("-p " + protoName(p))
			case !s.Neg:
				if *proto != s.Proto {
					return nil, nil
				}
			case proto != nil:
				if *proto == s.Proto {
					return nil, nil
				}
			default:
				fixed("! -p " + protoName(s.Proto))
			}
		case nft.AddrSet:
			if secs, ok := t.affinity[s.Set]; ok {
				if s.Neg || s.Dst {
					return nil, fmt.Errorf("affinity set %s: only a source match has an iptables form", s.Set)
				}
				fixed(fmt.Sprintf("-m recent --name %s --rcheck --seconds %d --reap --rsource", recentName(s.Set), secs))
				continue
			}
			fixed(setMatch(t.setNames[s.Set], s.Neg, dir(s.Dst)))
		case nft.SetUpdate:
			effects = append(effects, fmt.Sprintf("-m recent --name %s --set --rsource", recentName(s.Set)))
		case nft.DNAT:
			to := netip.AddrPortFrom(s.Addr, s.Port).String()
			verdict = nft.Verdict{Kind: "dnat", Chain: to}
		case nft.RandomOneIn:
			if s.Mod > 1 {
				fixed(fmt.Sprintf("-m statistic --mode random --probability %.11f", 1/float64(s.Mod)))
			}
		case nft.FrontendVmap:
			verdict = nft.IfVmap{Map: s.Map}
		case nft.TupleSet:
			d := dir(s.Dst)
			fixed(setMatch(t.setNames[s.Set], s.Neg, d+","+d))
		case nft.AddrList:
			m, err := t.addrList(s, &srcAddr, &dstAddr)
			if errors.Is(err, errNever) {
				return nil, nil
			}
			if err != nil {
				return nil, err
			}
			if m != "" {
				fixed(m)
			}
		case nft.PortList:
			if proto == nil {
				return nil, fmt.Errorf("port match without a protocol")
			}
			chunks := portChunks(s.Ranges)
			flag := "--sports"
			if s.Dst {
				flag = "--dports"
			}
			if s.Neg {
				for _, c := range chunks {
					fixed("-m multiport ! " + flag + " " + c)
				}
			} else {
				var alts []string
				for _, c := range chunks {
					alts = append(alts, "-m multiport "+flag+" "+c)
				}
				groups = append(groups, alts)
			}
		case nft.ICMPType:
			mod, flag := "-m icmp", "--icmp-type"
			if s.Family == 6 {
				mod, flag = "-m icmp6", "--icmpv6-type"
			}
			var code *nft.ICMPCode
			if i+1 < len(stmts) {
				if c, ok := stmts[i+1].(nft.ICMPCode); ok {
					code = &c
					i++
				}
			}
			switch {
			case s.Neg && code != nil:
				return nil, fmt.Errorf("negated ICMP type with a code")
			case s.Neg:
				fixed(fmt.Sprintf("%s ! %s %d", mod, flag, s.Type))
			case code == nil:
				fixed(fmt.Sprintf("%s %s %d", mod, flag, s.Type))
			case code.Neg:
				fixed(fmt.Sprintf("%s %s %d %s ! %s %d/%d", mod, flag, s.Type, mod, flag, s.Type, code.Code))
			default:
				fixed(fmt.Sprintf("%s %s %d/%d", mod, flag, s.Type, code.Code))
			}
		case nft.ICMPCode:
			return nil, fmt.Errorf("ICMP code without a type")
		case nft.ICMPv6Types:
			var alts []string
			for _, ty := range s.Types {
				alts = append(alts, fmt.Sprintf("-m icmp6 --icmpv6-type %d", ty))
			}
			groups = append(groups, alts)
		case nft.CTState:
			fixed("-m conntrack --ctstate " + strings.ToUpper(strings.Join(s.States, ",")))
		case nft.IfName:
			flag := "-i"
			if s.Out {
				flag = "-o"
			}
			if s.Neg {
				flag = "! " + flag
			}
			name := s.Name
			if s.Prefix {
				name += "+"
			}
			fixed(flag + " " + name)
		case nft.LocalAddr:
			if s.Src {
				fixed("-m addrtype --src-type LOCAL")
			} else {
				fixed("-m addrtype --dst-type LOCAL")
			}
		case nft.MarkTest:
			fixed(fmt.Sprintf("-m mark --mark %#x/%#x", s.Bits, s.Bits))
		case nft.MarkSet:
			if s.Clear {
				effects = append(effects, fmt.Sprintf("-j MARK --set-xmark 0x0/%#x", s.Bits))
			} else {
				effects = append(effects, fmt.Sprintf("-j MARK --set-xmark %#x/%#x", s.Bits, s.Bits))
				passOnly = s.Bits == PassMark && len(effects) == 1
			}
		case nft.Log:
			effects = append(effects, "-j LOG --log-prefix "+strconv.Quote(logPrefix(s.Prefix)))
		case nft.Notrack:
			effects = append(effects, "-j CT --notrack")
		case nft.Reject:
			verdict = s
		case nft.Verdict, nft.Masquerade, nft.IfVmap:
			verdict = s
		default:
			return nil, fmt.Errorf("statement %T has no iptables form", s)
		}
	}
	var out []string
	for _, alt := range product(groups) {
		m := strings.Join(alt, " ")
		with := func(target string) string {
			if m == "" {
				return target
			}
			return m + " " + target
		}
		for _, e := range effects { // "-m recent --set" is a match with a side effect: no target
			out = append(out, with(e))
		}
		switch v := verdict.(type) {
		case nil:
		case nft.Masquerade:
			out = append(out, with("-j MASQUERADE"))
		case nft.Reject:
			if table != "nat" {
				out = append(out, with("-j REJECT"))
				break
			}
			// iptables rejects only in filter: mark, end felis's nat chains as an accept
			// would, and let the filter hook chains reject.
			out = append(out, with(fmt.Sprintf("-j MARK --set-xmark %#x/%#x", RejectMark, RejectMark)))
			if base {
				out = append(out, with("-j RETURN"))
			} else {
				out = append(out, with(acceptMarkSet), acceptMarkCheck)
			}
		case nft.IfVmap:
			chain, err := t.dispatch(fam, table, v.Map, v.Out)
			if err != nil {
				return nil, err
			}
			out = append(out, with("-j "+chain), acceptMarkCheck)
		case nft.Verdict:
			switch v.Kind {
			case "accept":
				if base {
					out = append(out, with("-j RETURN"))
				} else {
					out = append(out, with(acceptMarkSet), acceptMarkCheck)
				}
			case "drop":
				if table != "nat" {
					out = append(out, with("-j DROP"))
					break
				}
				// iptables refuses DROP in nat: mark, end felis's nat chains as an accept
				// would, and let the filter hook chains drop.
				out = append(out, with(fmt.Sprintf("-j MARK --set-xmark %#x/%#x", DropMark, DropMark)))
				if base {
					out = append(out, with("-j RETURN"))
				} else {
					out = append(out, with(acceptMarkSet), acceptMarkCheck)
				}
			case "dnat":
				out = append(out, with("-j DNAT --to-destination "+v.Chain))
			case "goto":
				if err := t.chain(fam, table, v.Chain, false); err != nil {
					return nil, err
				}
				out = append(out, with("-g "+ChainName(v.Chain)))
			case "return":
				if passOnly && len(effects) == 1 {
					out = append(out, fmt.Sprintf("-m mark --mark %#x/%#x -j RETURN", PassMark, PassMark))
				} else {
					out = append(out, with("-j RETURN"))
				}
			case "jump":
				if err := t.chain(fam, table, v.Chain, false); err != nil {
					return nil, err
				}
				out = append(out, with("-j "+ChainName(v.Chain)), acceptMarkCheck)
			default:
				return nil, fmt.Errorf("verdict %s has no iptables form", v.Kind)
			}
		}
	}
	return out, nil
}

// recentName is the xt_recent list standing in for an nftables affinity set.
func recentName(set string) string {
	sum := sha256.Sum256([]byte(set))
	return Prefix + "aff-" + hex.EncodeToString(sum[:8])
}

func dir(dst bool) string {
	if dst {
		return "dst"
	}
	return "src"
}

func setMatch(name string, neg bool, flags string) string {
	if neg {
		return "-m set ! --match-set " + name + " " + flags
	}
	return "-m set --match-set " + name + " " + flags
}

// addrList matches literal prefixes: -s/-d for the first single prefix on a side (iptables
// takes one per rule), a content-named hash:net set otherwise.
func (t *translator) addrList(s nft.AddrList, src, dst *bool) (string, error) {
	if len(s.Prefixes) == 0 {
		return "", nil
	}
	if s.Prefixes[0].Bits() == 0 { // normalized: a /0 is the only element
		if s.Neg {
			return "", errNever
		}
		return "", nil
	}
	used, flag := src, "-s"
	if s.Dst {
		used, flag = dst, "-d"
	}
	if len(s.Prefixes) == 1 && !*used {
		*used = true
		p := s.Prefixes[0].String()
		if s.Neg {
			return "! " + flag + " " + p, nil
		}
		return flag + " " + p, nil
	}
	name := literalSetName(s.Family, s.Prefixes)
	set := Set{Name: name, Family: s.Family, Type: "hash:net", MaxElem: t.maxElem}
	for _, p := range s.Prefixes {
		set.Members = append(set.Members, members("hash:net", nft.Element{Prefix: p})...)
	}
	t.sets[name] = set
	return setMatch(name, s.Neg, dir(s.Dst)), nil
}

// portChunks splits normalized ranges into multiport lists of at most 15 ports.
func portChunks(rs []snapshot.PortRange) []string {
	var out []string
	var cur []string
	n := 0
	for _, r := range rs {
		item, w := strconv.Itoa(int(r.Min)), 1
		if r.Max != r.Min {
			item, w = fmt.Sprintf("%d:%d", r.Min, r.Max), 2
		}
		if n+w > maxMultiport {
			out = append(out, strings.Join(cur, ","))
			cur, n = nil, 0
		}
		cur = append(cur, item)
		n += w
	}
	if len(cur) > 0 {
		out = append(out, strings.Join(cur, ","))
	}
	return out
}

// logPrefix fits the kernel's 29-character log prefix and iptables-restore's quoting.
func logPrefix(p string) string {
	p = strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < ' ' || r > '~' {
			return '_'
		}
		return r
	}, p)
	if len(p) > 29 {
		p = p[:29]
	}
	return p
}

func product(groups [][]string) [][]string {
	out := [][]string{nil}
	for _, g := range groups {
		var next [][]string
		for _, prefix := range out {
			for _, alt := range g {
				next = append(next, append(append([]string(nil), prefix...), alt))
			}
		}
		out = next
	}
	return out
}
