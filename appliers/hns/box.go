package hns

// box is a product of per-dimension sets: the packets one HNS rule can match. proto is -1 for
// any protocol. Ports are a plain dimension here (packets without ports carry port 0); a box
// with a port restriction becomes an HNS rule only for TCP and UDP.
type box struct {
	proto        int
	src, dst     addrSet
	sPort, dPort spans
}

// fullBox matches every packet.
func fullBox() box {
	return box{proto: -1, src: fullAddrs(), dst: fullAddrs(), sPort: fullPorts, dPort: fullPorts}
}

// norm drops the family parts one side lacks: a packet's two addresses share a family.
func (b box) norm() box {
	if b.src.v4.empty() || b.dst.v4.empty() {
		b.src.v4, b.dst.v4 = nil, nil
	}
	if b.src.v6.empty() || b.dst.v6.empty() {
		b.src.v6, b.dst.v6 = nil, nil
	}
	return b
}

func (b box) empty() bool {
	return b.src.empty() || b.dst.empty() || b.sPort.empty() || b.dPort.empty()
}

// intersect returns a ∩ b and whether it is non-empty.
func (b box) intersect(o box) (box, bool) {
	p := b.proto
	if o.proto >= 0 {
		if p >= 0 && p != o.proto {
			return box{}, false
		}
		p = o.proto
	}
	r := box{proto: p, sPort: b.sPort.intersect(o.sPort), dPort: b.dPort.intersect(o.dPort)}
	if r.sPort.empty() || r.dPort.empty() {
		return box{}, false
	}
	r.src = b.src.intersect(o.src)
	r.dst = b.dst.intersect(o.dst)
	r = r.norm()
	return r, !r.empty()
}

// covers reports b ⊇ o.
func (b box) covers(o box) bool {
	if b.proto >= 0 && b.proto != o.proto {
		return false
	}
	return o.src.subsetOf(b.src) && o.dst.subsetOf(b.dst) && o.sPort.subsetOf(b.sPort) && o.dPort.subsetOf(b.dPort)
}

func (b box) overlaps(o box) bool {
	_, ok := b.intersect(o)
	return ok
}

// merge returns b ∪ o when that union is itself a box (they differ in at most one dimension).
func (b box) merge(o box) (box, bool) {
	if b.proto != o.proto {
		return box{}, false
	}
	sameSrc, sameDst := b.src.equal(o.src), b.dst.equal(o.dst)
	sameSP, sameDP := b.sPort.equal(o.sPort), b.dPort.equal(o.dPort)
	diff := 0
	for _, same := range []bool{sameSrc, sameDst, sameSP, sameDP} {
		if !same {
			diff++
		}
	}
	if diff > 1 {
		return box{}, false
	}
	r := b
	switch {
	case !sameSrc:
		r.src = b.src.union(o.src)
	case !sameDst:
		r.dst = b.dst.union(o.dst)
	case !sameSP:
		r.sPort = b.sPort.union(o.sPort)
	case !sameDP:
		r.dPort = b.dPort.union(o.dPort)
	}
	// Union on one address side may bring in a family the other side lacks; norm keeps the
	// product exact.
	return r.norm(), true
}

// entry is one element of a compiled first-match list.
type entry struct {
	b     box
	allow bool
}

// restrictRev returns rev (a list held back to front) limited to the packets of x, front to
// back, stopping after the first entry that covers x (everything later is shadowed inside x).
func restrictRev(rev []entry, x box) []entry {
	var out []entry
	for i := len(rev) - 1; i >= 0; i-- {
		e := rev[i]
		if y, ok := e.b.intersect(x); ok {
			out = append(out, entry{y, e.allow})
		}
		if e.b.covers(x) {
			break
		}
	}
	return out
}

// cross is the pairwise intersection of two unions of boxes.
func cross(a, b []box) []box {
	var out []box
	for _, x := range a {
		for _, y := range b {
			if z, ok := x.intersect(y); ok {
				out = append(out, z)
			}
		}
	}
	return out
}
