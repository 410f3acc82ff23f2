package file

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/felis-dev/felis/model"
)

// writeTree creates files (relative path -> contents) below a new temporary directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// placed is an object's key and where it was read from, relative to the tree.
type placed struct {
	Key  string
	File string
	Line int
}

func placements(t *testing.T, dir string, objs []model.Object) []placed {
	t.Helper()
	var out []placed
	for _, o := range objs {
		m := o.GetMeta()
		rel, err := filepath.Rel(dir, m.Source.File)
		if err != nil {
			t.Fatal(err)
		}
		if m.Source.Name != SourceName {
			t.Errorf("%s: source name %q, want %q", m.Key, m.Source.Name, SourceName)
		}
		out = append(out, placed{m.Key.String(), rel, m.Source.Line})
	}
	return out
}

const gnsList = `apiVersion: projectcalico.org/v3
items:
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata:
    name: one
  spec:
    nets: [10.0.0.0/8]
- apiVersion: projectcalico.org/v3
  kind: GlobalNetworkSet
  metadata:
    name: two
  spec:
    nets: [172.16.0.0/12]
kind: GlobalNetworkSetList
metadata:
  resourceVersion: "7"
`

func TestLoadPathTree(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"b/netsets.yaml": gnsList,
		"a.yml": `# kubectl get ns,cm -o yaml
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: web
    labels: {team: web}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: x, namespace: web}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: y, namespace: web}
`,
		"c.json": `{"apiVersion": "projectcalico.org/v3", "kind": "Tier",
 "metadata": {"name": "security"}, "spec": {"order": 100}}`,
		"b/z/deep.yaml":  "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.244.0.0/16\n  vxlanMode: Always\n",
		"b/notes.txt":    "not a resource file",
		".hidden/x.yaml": "this is not: [valid",
		"b/.swap.yaml":   "neither: [is this",
	})
	objs, problems, notices, err := LoadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []placed{
		{"Profile kns.web", "a.yml", 5},
		{"GlobalNetworkSet one", "b/netsets.yaml", 3},
		{"GlobalNetworkSet two", "b/netsets.yaml", 9},
		{"IPPool p", "b/z/deep.yaml", 2},
		{"Tier security", "c.json", 1},
	}
	if diff := cmp.Diff(want, placements(t, dir, objs)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if len(problems) != 0 {
		t.Errorf("problems: %v", problems)
	}
	if diff := cmp.Diff([]string{"skipped 2 v1 ConfigMap (a kind felis does not use)"}, notices); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
}

func TestLoadPathProblems(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"1.yaml": gnsList,
		"2.yaml": `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: two
spec:
  nets: [192.0.2.0/24]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: three
spec:
  nets: [192.0.2.0/33]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: four
spec:
  nets: [192.0.2.0/24]
---
kind: Namespace
metadata: {name: nover}
---
apiVersion: v1
kind: Namespace
metadata:
  name: broken
  labels: [
`,
	})
	objs, problems, _, err := LoadPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	wantObjs := []placed{
		{"GlobalNetworkSet one", "1.yaml", 3},
		{"GlobalNetworkSet two", "1.yaml", 9},
		{"GlobalNetworkSet four", "2.yaml", 15},
	}
	if diff := cmp.Diff(wantObjs, placements(t, dir, objs)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.String())
	}
	f2 := filepath.Join(dir, "2.yaml")
	want := []string{
		f2 + ":1: GlobalNetworkSet two: duplicate: GlobalNetworkSet two is already defined at " + filepath.Join(dir, "1.yaml") + ":9; this definition is ignored",
		f2 + `:8: GlobalNetworkSet three: spec.nets[0]: invalid CIDR "192.0.2.0/33"; expected an address or address/prefix-length`,
		f2 + ":22: apiVersion: required (every resource needs apiVersion and kind)",
		f2 + ":30: invalid YAML: did not find expected node content",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
}

func TestLoadPathExamples(t *testing.T) {
	objs, problems, notices, err := LoadPath("../../examples/cluster")
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 0 {
		t.Errorf("examples/cluster has problems: %v", problems)
	}
	count := map[model.Kind]int{}
	for _, o := range objs {
		count[o.GetMeta().Key.Kind]++
		if o.GetMeta().Source.Line < 1 {
			t.Errorf("%s has no line", o.GetMeta().Key)
		}
	}
	want := map[model.Kind]int{
		model.KindNode: 3, model.KindWorkloadEndpoint: 12, model.KindProfile: 15, model.KindTier: 2,
		model.KindGlobalNetworkPolicy: 3, model.KindNetworkPolicy: 5, model.KindGlobalNetworkSet: 1,
		model.KindIPPool: 2, model.KindIPAMBlock: 5, model.KindHostEndpoint: 1,
		model.KindFelixConfiguration: 1, model.KindService: 2, model.KindEndpointSlice: 2,
	}
	if diff := cmp.Diff(want, count); diff != "" {
		t.Errorf("objects per kind (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"skipped 1 v1 ConfigMap (a kind felis does not use)"}, notices); diff != "" {
		t.Errorf("notices (-want +got):\n%s", diff)
	}
}

func TestLoadPathMissing(t *testing.T) {
	if _, _, _, err := LoadPath(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("LoadPath of a missing path: no error")
	}
}
