package store

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/felis-dev/felis/model"
)

// TestConcurrentWritersReadersAndConsumer runs writers, readers and an acking consumer in
// parallel (run it with -race). Each writer owns a set of pairs and always writes or deletes
// both halves of a pair in one batch, so every view must hold both halves at the same
// generation or neither; revisions seen by any reader never go backwards.
func TestConcurrentWritersReadersAndConsumer(t *testing.T) {
	const (
		writers = 4
		pairs   = 8
		rounds  = 300
		readers = 4
	)
	s := New()
	s.RegisterSource("test")
	cons := s.RegisterConsumer("acker")
	done := make(chan struct{})
	var wg, bg sync.WaitGroup
	var errs atomic.Int64
	fail := func(format string, args ...any) {
		if errs.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}

	half := func(w, p int, h string, gen int) *model.WorkloadEndpoint {
		o := wep(fmt.Sprintf("w%d", w), fmt.Sprintf("pair%d-%s", p, h), fmt.Sprintf("node%d", p%3))
		o.Labels = model.Labels{"gen": strconv.Itoa(gen)}
		return o
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := uint64(0)
			for i := range rounds {
				p := (i * 7) % pairs
				var b Batch
				if i%5 == 4 {
					ns := fmt.Sprintf("w%d", w)
					b.Deletes = []model.Key{wepKey(ns, fmt.Sprintf("pair%d-a", p)), wepKey(ns, fmt.Sprintf("pair%d-b", p))}
				} else {
					b.Upserts = []model.Object{half(w, p, "a", i), half(w, p, "b", i)}
				}
				rev, err := s.Write(b)
				if err != nil {
					fail("writer %d: %v", w, err)
					return
				}
				if rev < last {
					fail("writer %d: revision went back from %d to %d", w, last, rev)
				}
				last = rev
			}
		}()
	}

	checkView := func(v *View) {
		type pairState struct {
			gens [2]string
			seen [2]bool
		}
		state := map[string]*pairState{}
		for o := range List[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint) {
			if o.Revision > v.Revision() {
				fail("view at %d holds %s at revision %d", v.Revision(), o.Key, o.Revision)
			}
			id := o.Key.ID()
			pair, h := id[:len(id)-2], id[len(id)-1]-'a'
			ps := state[pair]
			if ps == nil {
				ps = &pairState{}
				state[pair] = ps
			}
			ps.gens[h], ps.seen[h] = o.Labels["gen"], true
		}
		for pair, ps := range state {
			if ps.seen != [2]bool{true, true} || ps.gens[0] != ps.gens[1] {
				fail("view at %d: pair %s torn: %+v", v.Revision(), pair, *ps)
			}
		}
	}

	for r := range readers {
		bg.Add(1)
		go func() {
			defer bg.Done()
			last := uint64(0)
			for {
				select {
				case <-done:
					return
				default:
				}
				v := s.View()
				if v.Revision() < last {
					fail("reader %d: view revision went back from %d to %d", r, last, v.Revision())
				}
				last = v.Revision()
				checkView(v)
				// Share one view between goroutines: views are safe for concurrent use.
				var inner sync.WaitGroup
				for range 2 {
					inner.Add(1)
					go func() { defer inner.Done(); checkView(v) }()
				}
				inner.Wait()
				n := 0
				for range ListOnNode[*model.WorkloadEndpoint](v, model.KindWorkloadEndpoint, "node1") {
					n++
				}
				if n%2 != 0 {
					fail("reader %d: odd number (%d) of endpoints on node1", r, n)
				}
			}
		}()
	}

	// The consumer follows the change feed and acks; its replica must match every view it
	// builds it against.
	bg.Add(1)
	go func() {
		defer bg.Done()
		replica := map[model.Key]uint64{}
		acked := uint64(0)
		for {
			changed := s.Changed()
			v := s.View()
			for c := range v.ChangesSince(acked) {
				if c.Revision <= acked {
					fail("consumer: change %v at %d not after acked %d", c.Key, c.Revision, acked)
				}
				if c.Deleted {
					delete(replica, c.Key)
				} else {
					replica[c.Key] = c.Revision
				}
			}
			want := revisions(v)
			if len(want) != len(replica) {
				fail("consumer at %d: replica has %d objects, view %d", v.Revision(), len(replica), len(want))
			}
			for k, rev := range want {
				if replica[k] != rev {
					fail("consumer at %d: %v at %d in replica, %d in view", v.Revision(), k, replica[k], rev)
					break
				}
			}
			acked = v.Revision()
			cons.Ack(acked)
			select {
			case <-done:
				return
			case <-changed:
			}
		}
	}()

	wg.Wait()
	if err := s.MarkInSync("test"); err != nil { // wakes the consumer one last time
		t.Fatal(err)
	}
	close(done)
	bg.Wait()
	checkView(s.View())
	if want := uint64(writers * rounds); s.Revision() > want {
		t.Errorf("store revision %d, more than the %d batches written", s.Revision(), want)
	}
}

// TestViewInSyncIsAtomic: a source writes its initial state and then marks itself in sync
// while readers take views; a view that reports InSync must hold the whole initial state.
func TestViewInSyncIsAtomic(t *testing.T) {
	for range 20 {
		s := New()
		s.RegisterSource("file")
		const initial = 200
		go func() {
			for i := range initial {
				if _, err := s.Write(Batch{Upserts: []model.Object{wep("a", fmt.Sprint("w", i), "n1")}}); err != nil {
					t.Error(err)
				}
			}
			if err := s.MarkInSync("file"); err != nil {
				t.Error(err)
			}
		}()
		for {
			v := s.View()
			if !v.InSync() {
				continue
			}
			if n := v.Count(model.KindWorkloadEndpoint); n != initial {
				t.Fatalf("in-sync view at revision %d holds %d endpoints, want %d", v.Revision(), n, initial)
			}
			break
		}
	}
}
