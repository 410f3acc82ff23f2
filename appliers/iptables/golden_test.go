package iptables

import (
	"flag"
	"github.com/felis-dev/felis/appliers/internal/fixture"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/fixture.rules")

// TestGolden pins the whole translated fixture (ipset save and iptables-save form, both
// families). It changes whenever the nftables renderer does; review the diff, then rewrite
// it with go test ./appliers/iptables -run TestGolden -update.
func TestGolden(t *testing.T) {
	got := mustRender(t, fixture.Snapshot()).String()
	path := filepath.Join("testdata", "fixture.rules")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s is stale (-file +rendered); if the change is intended, run go test ./appliers/iptables -run TestGolden -update:\n%s", path, diff)
	}
}
