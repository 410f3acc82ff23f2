package golden

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/datastore/file"
	"github.com/felis-dev/felis/derive"
	"github.com/felis-dev/felis/model/store"
	"github.com/felis-dev/felis/snapshot"
)

var update = flag.Bool("update", false, "rewrite every scenario's expected snapshot.yaml")

// defaultNode is the node a scenario is derived for unless its header names another.
const defaultNode = "node-1"

// scenario is one golden folder.
type scenario struct {
	Dir   string
	Input string // input.yaml or the input/ directory
	Node  string
	Opts  derive.Options
}

// readScenario finds a folder's input and reads its header: the first line of the input (or of
// the first file of an input/ tree) may be "# golden: node=NAME [all-policies]".
func readScenario(dir string) (scenario, bool, error) {
	sc := scenario{Dir: dir, Node: defaultNode}
	first := ""
	if fi, err := os.Stat(filepath.Join(dir, "input")); err == nil && fi.IsDir() {
		sc.Input = filepath.Join(dir, "input")
		matches, _ := filepath.Glob(filepath.Join(sc.Input, "*.yaml"))
		if len(matches) > 0 {
			first = matches[0]
		}
	} else if _, err := os.Stat(filepath.Join(dir, "input.yaml")); err == nil {
		sc.Input = filepath.Join(dir, "input.yaml")
		first = sc.Input
	} else {
		return sc, false, nil
	}
	if first == "" {
		return sc, true, nil
	}
	f, err := os.Open(first)
	if err != nil {
		return sc, true, err
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	header, ok := strings.CutPrefix(strings.TrimSpace(line), "# golden:")
	if !ok {
		return sc, true, nil
	}
	for _, field := range strings.Fields(header) {
		switch {
		case strings.HasPrefix(field, "node="):
			sc.Node = strings.TrimPrefix(field, "node=")
		case field == "all-policies":
			sc.Opts.AllPoliciesActive = true
		default:
			return sc, true, fmt.Errorf("%s: unknown golden header field %q (want node=NAME or all-policies)", first, field)
		}
	}
	return sc, true, nil
}

// render loads a scenario's input into a fresh store and returns the node's snapshot as
// canonical YAML.
func render(t *testing.T, sc scenario) []byte {
	t.Helper()
	objs, problems, _, err := file.LoadPath(sc.Input)
	if err != nil {
		t.Fatalf("load %s: %v", sc.Input, err)
	}
	for _, p := range problems {
		t.Errorf("input problem (fix the scenario): %s", p)
	}
	st := store.New()
	if _, err := st.Write(store.Batch{Upserts: objs}); err != nil {
		t.Fatalf("store: %v", err)
	}
	snap, err := derive.Derive(st.View(), sc.Node, sc.Opts)
	if err != nil {
		t.Fatalf("derive %s: %v", sc.Node, err)
	}
	out, err := snap.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGolden(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sc, ok, err := readScenario(e.Name())
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		if !ok {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			got := render(t, sc)
			wantPath := filepath.Join(sc.Dir, "snapshot.yaml")
			if *update {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run `make golden` to create it)", err)
			}
			if !bytes.Equal(want, got) {
				t.Errorf("%s differs from the derived snapshot of %s (-want +got); if the change is intended run `make golden` and review:\n%s",
					wantPath, sc.Node, cmp.Diff(strings.Split(string(want), "\n"), strings.Split(string(got), "\n")))
			}
			// The expected file must decode into a snapshot that encodes back to itself.
			dec, err := snapshot.Decode(want)
			if err != nil {
				t.Fatalf("decode %s: %v", wantPath, err)
			}
			again, err := dec.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, again) {
				t.Errorf("%s does not survive decode/encode:\n%s", wantPath, cmp.Diff(string(want), string(again)))
			}
		})
	}
	if n == 0 {
		t.Fatal("no golden scenarios found")
	}
}
