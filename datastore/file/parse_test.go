package file

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// parsed is the comparable summary of one parsed document.
type parsed struct {
	Line       int
	APIVersion string
	Kind       string
	JSON       string
}

func summarize(docs []document) []parsed {
	var out []parsed
	for _, d := range docs {
		out = append(out, parsed{d.Line, d.APIVersion, d.Kind, string(d.JSON)})
	}
	return out
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantDocs []parsed
		wantErrs []syntaxError
	}{{
		name: "multi-document with comments and empty documents",
		in: `# leading comment
---
apiVersion: v1
kind: Namespace
metadata:
  name: a
---
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {x: "1"}}
...
`,
		wantDocs: []parsed{
			{3, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}`},
			{9, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"labels":{"x":"1"},"name":"b"}}`},
		},
	}, {
		name: "kubectl List: items carry their own kind, lines per item",
		in: `apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: a
- apiVersion: v1
  kind: ServiceAccount
  metadata:
    name: s
    namespace: a
kind: List
metadata:
  resourceVersion: ""
`,
		wantDocs: []parsed{
			{3, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}`},
			{7, "v1", "ServiceAccount", `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"s","namespace":"a"}}`},
		},
	}, {
		name: "typed list: items inherit kind and apiVersion",
		in: `apiVersion: projectcalico.org/v3
kind: GlobalNetworkSetList
items:

  - metadata:
      name: g
    spec:
      nets: [10.0.0.0/8]
`,
		wantDocs: []parsed{
			{5, "projectcalico.org/v3", "GlobalNetworkSet", `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"g"},"spec":{"nets":["10.0.0.0/8"]}}`},
		},
	}, {
		name: "scalars keep YAML meaning; timestamps stay text; merge keys",
		in: `apiVersion: v1
kind: Thing
base: &b {port: 80, on: true, ratio: 0.5, none: null}
spec:
  <<: *b
  port: 81
  when: 2024-01-02T03:04:05Z
  version: "1.0"
`,
		wantDocs: []parsed{
			{1, "v1", "Thing", `{"apiVersion":"v1","base":{"none":null,"on":true,"port":80,"ratio":0.5},"kind":"Thing","spec":{"none":null,"on":true,"port":81,"ratio":0.5,"version":"1.0","when":"2024-01-02T03:04:05Z"}}`},
		},
	}, {
		name: "JSON file",
		in:   "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"List\",\n\t\"items\": [\n\t\t{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"a\"}}\n\t]\n}\n",
		wantDocs: []parsed{
			{5, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}`},
		},
	}, {
		name: "a syntax error hides only its own document",
		in: `apiVersion: v1
kind: Namespace
metadata:
  name: a
---
apiVersion: v1
kind: Namespace
metadata:
  name: [b
---
apiVersion: v1
kind: Namespace
metadata:
  name: c
`,
		wantDocs: []parsed{
			{1, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}`},
			{11, "v1", "Namespace", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}`},
		},
		wantErrs: []syntaxError{{Line: 9, Reason: "invalid YAML: did not find expected ',' or ']'"}},
	}, {
		name: "missing kind, duplicate key, not a mapping",
		in: `apiVersion: v1
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
kind: Pod
---
- just
- a list
`,
		wantErrs: []syntaxError{
			{Line: 1, Field: "kind", Reason: "required (every resource needs apiVersion and kind)"},
			{Line: 6, Reason: `invalid YAML: key "kind" already defined at line 5`},
			{Line: 8, Reason: "a document must be a mapping with apiVersion and kind"},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, errs := parseFile([]byte(tt.in))
			if diff := cmp.Diff(tt.wantDocs, summarize(docs)); diff != "" {
				t.Errorf("documents (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantErrs, errs); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAliasBomb(t *testing.T) {
	in := "apiVersion: v1\nkind: X\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		in += n + ": &" + n + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = n
	}
	docs, errs := parseFile([]byte(in))
	if len(docs) != 0 || len(errs) != 1 {
		t.Fatalf("want one error and no document, got %d documents, errors %+v", len(docs), errs)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- {kind: A, apiVersion: v1}\n---\nx: [\n"))
	f.Add([]byte("{\"kind\": \"X\", \"apiVersion\": \"v1\", \"a\": *x}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		docs, _ := parseFile(data)
		for _, d := range docs {
			if d.Kind == "" || d.APIVersion == "" || d.Line < 1 {
				t.Fatalf("bad document %+v", d)
			}
		}
	})
}
