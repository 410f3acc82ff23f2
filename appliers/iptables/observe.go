package iptables

import (
	"bufio"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

var commentRE = regexp.MustCompile(`--comment "?felis:([0-9a-f]{16})"?`)

// ParseSave reads iptables-save output of one family into st: felis chains with their rule
// hashes, and felis-commented rules in every other chain as hook rules.
func ParseSave(st *State, family int, text string) error {
	table := ""
	index := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "*"):
			table, index = l[1:], map[string]int{}
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if strings.HasPrefix(name, Prefix) {
				k := ChainKey{Family: family, Table: table, Chain: name}
				if st.Chains[k] == nil {
					st.Chains[k] = []string{}
				}
			}
		case strings.HasPrefix(l, "-A "):
			chain, rest, ok := strings.Cut(l[3:], " ")
			if !ok || table == "" {
				return fmt.Errorf("%s-save line %d: %q: not a rule", binary(family), n, l)
			}
			hash := ""
			if m := commentRE.FindStringSubmatch(rest); m != nil {
				hash = m[1]
			}
			k := ChainKey{Family: family, Table: table, Chain: chain}
			if strings.HasPrefix(chain, Prefix) {
				st.Chains[k] = append(st.Chains[k], hash)
			} else if hash != "" {
				st.Hooks[k] = append(st.Hooks[k], HookRule{Index: index[chain], Line: rest, Hash: hash})
			}
			index[chain]++
			if !strings.HasPrefix(chain, Prefix) {
				st.ChainLen[k] = index[chain]
			}
		}
	}
	return sc.Err()
}

// ParseIPSetSave reads `ipset save` output into st: felis sets with members in canonical form.
func ParseIPSetSave(st *State, text string) error {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || !strings.HasPrefix(f[1], Prefix) {
			continue
		}
		switch f[0] {
		case "create":
			s := Set{Name: f[1], Type: f[2], Family: 4, MaxElem: 65536}
			for i := 3; i+1 < len(f); i++ {
				switch f[i] {
				case "family":
					if f[i+1] == "inet6" {
						s.Family = 6
					}
				case "maxelem":
					s.MaxElem, _ = strconv.Atoi(f[i+1])
				}
			}
			st.Sets[s.Name] = s
		case "add":
			s, ok := st.Sets[f[1]]
			if !ok {
				return fmt.Errorf("ipset save line %d: add to %s before its create", n, f[1])
			}
			m, err := canonicalMember(s.Type, f[2])
			if err != nil {
				return fmt.Errorf("ipset save line %d: set %s: %w", n, f[1], err)
			}
			s.Members = append(s.Members, m)
			st.Sets[f[1]] = s
		}
	}
	for name, s := range st.Sets {
		sortStrings(s.Members)
		st.Sets[name] = s
	}
	return sc.Err()
}

// canonicalMember rewrites a member as Render writes it (ipset prints a host net without /32).
func canonicalMember(typ, m string) (string, error) {
	switch typ {
	case "hash:ip":
		a, err := netip.ParseAddr(m)
		if err != nil {
			return "", err
		}
		return a.String(), nil
	case "hash:net":
		if !strings.Contains(m, "/") {
			a, err := netip.ParseAddr(m)
			if err != nil {
				return "", err
			}
			return netip.PrefixFrom(a, a.BitLen()).String(), nil
		}
		p, err := netip.ParsePrefix(m)
		if err != nil {
			return "", err
		}
		return p.String(), nil
	case "hash:ip,port":
		addr, pp, ok := strings.Cut(m, ",")
		a, err := netip.ParseAddr(addr)
		if !ok || err != nil {
			return "", fmt.Errorf("member %q: want ADDR,PROTO:PORT", m)
		}
		return a.String() + "," + pp, nil
	}
	return m, nil
}
