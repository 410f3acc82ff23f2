package store

import (
	"testing"

	"github.com/felis-dev/felis/model"
)

func wep(ns, name, node string) *model.WorkloadEndpoint {
	return &model.WorkloadEndpoint{Meta: model.Meta{Key: model.Key{Kind: model.KindWorkloadEndpoint, Namespace: ns, Name: name}, Source: model.Source{Name: "file"}}, Node: node}
}

func TestWriteViewAndFeed(t *testing.T) {
	s := New()
	c := s.RegisterConsumer("t")
	r1, err := s.Write(Batch{Upserts: []model.Object{wep("a", "w1", "n1"), wep("a", "w2", "n2")}})
	if err != nil || r1 != 1 {
		t.Fatalf("write: rev %d err %v", r1, err)
	}
	v1 := s.View()
	r2, _ := s.Write(Batch{Deletes: []model.Key{{Kind: model.KindWorkloadEndpoint, Namespace: "a", Name: "w1"}}})
	if r2 != 2 {
		t.Fatalf("rev %d", r2)
	}
	if v1.Count(model.KindWorkloadEndpoint) != 2 {
		t.Fatalf("old view changed")
	}
	v2 := s.View()
	if n := v2.Count(model.KindWorkloadEndpoint); n != 1 {
		t.Fatalf("count %d", n)
	}
	var got []Change
	for ch := range v2.ChangesSince(1) {
		got = append(got, ch)
	}
	if len(got) != 1 || !got[0].Deleted || got[0].Key.Name != "w1" {
		t.Fatalf("changes %+v", got)
	}
	n := 0
	for range ListOnNode[*model.WorkloadEndpoint](v2, model.KindWorkloadEndpoint, "n2") {
		n++
	}
	if n != 1 {
		t.Fatalf("on node %d", n)
	}
	if s.Tombstones() != 1 {
		t.Fatalf("tombstone dropped before ack")
	}
	c.Ack(2)
	if s.Tombstones() != 0 {
		t.Fatalf("tombstone kept after ack")
	}
}
