// Package golden holds golden-file scenarios: per folder, input resources (input.yaml, or an
// input/ tree) and the snapshot one node must get (snapshot.yaml). golden_test.go derives each
// and diffs; `go test ./golden -update` (make golden) rewrites the expected files.
package golden
