package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/felis-dev/felis/datastore"
	_ "github.com/felis-dev/felis/datastore/file" // registers file:PATH
	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

func init() { rootCmd.AddCommand(newValidateCmd()) }

func newValidateCmd() *cobra.Command {
	var spec string
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Report every invalid resource in a datastore",
		Long: `validate loads a datastore the way the agent does and prints each invalid resource as

  source:line: Kind namespace/name: field.path: reason

one per line, sorted by file and line, with a summary on stderr. Invalid resources are the
ones the agent would leave out. Kinds felis does not use are skipped with a notice, not an
error. The exit status is 1 if there is any problem, else 0.`,
		Example: `  felis validate --datastore file:examples/cluster
  felis validate --datastore file:dump.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runValidate(cmd.Context(), spec, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&spec, "datastore", "file:examples/cluster", "datastore: file:PATH, kubernetes or etcd:URL")
	return cmd
}

// runValidate loads spec into a fresh store, prints its problems to out and a summary to
// errOut, and returns exitError{1} when there is any problem.
func runValidate(ctx context.Context, spec string, out, errOut io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	src, err := datastore.Open(spec)
	if err != nil {
		return err
	}
	st := store.New()
	problems, err := src.Load(ctx, st)
	if err != nil {
		return fmt.Errorf("--datastore %s: %w", spec, err)
	}
	problems = slices.Clone(problems)
	slices.SortStableFunc(problems, compareProblems)
	for _, p := range problems {
		fmt.Fprintln(out, p.String())
	}
	if n, ok := src.(interface{ Notices() []string }); ok {
		for _, s := range n.Notices() {
			fmt.Fprintf(errOut, "felis validate: %s\n", s)
		}
	}
	v := st.View()
	loaded := 0
	for _, k := range model.Kinds {
		loaded += v.Count(k)
	}
	fmt.Fprintf(errOut, "felis validate: %s: %d objects loaded, %d %s\n", spec, loaded, len(problems), plural(len(problems), "problem", "problems"))
	if len(problems) > 0 {
		return exitError{code: 1}
	}
	return nil
}

// compareProblems orders by file, then line as a number, then the whole text.
func compareProblems(a, b datastore.Problem) int {
	af, al := splitLine(a.Where)
	bf, bl := splitLine(b.Where)
	if c := strings.Compare(af, bf); c != 0 {
		return c
	}
	if al != bl {
		return al - bl
	}
	return strings.Compare(a.String(), b.String())
}

// splitLine splits "file:line" (line 0 when absent).
func splitLine(where string) (string, int) {
	i := strings.LastIndexByte(where, ':')
	if i < 0 {
		return where, 0
	}
	n, err := strconv.Atoi(where[i+1:])
	if err != nil {
		return where, 0
	}
	return where[:i], n
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
