package convert

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/selector"
)

// cmpOpts compares model objects: selectors by canonical String(), netip values by value,
// nil and empty slices/maps alike.
var cmpOpts = cmp.Options{
	cmp.Transformer("selector", func(s *selector.Selector) string {
		if s == nil {
			return "<none>"
		}
		return s.String()
	}),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmpopts.EquateEmpty(),
}

// decodeOK decodes and fails the test on any error or skip.
func decodeOK(t *testing.T, apiVersion, kind, js string) Result {
	t.Helper()
	r := Decode(apiVersion, kind, []byte(js))
	if len(r.Errors) > 0 || r.Skipped {
		t.Fatalf("Decode(%s %s): skipped=%v errors=%v", apiVersion, kind, r.Skipped, r.Errors)
	}
	return r
}

// only returns the single object of a result.
func only(t *testing.T, r Result) model.Object {
	t.Helper()
	if len(r.Objects) != 1 {
		t.Fatalf("%s: got %d objects, want 1", r.Resource, len(r.Objects))
	}
	return r.Objects[0]
}

// sel parses a selector for expectations.
func sel(s string) *selector.Selector { return selector.MustParse(s) }

// u8 returns a pointer to v.
func u8(v uint8) *uint8 { return &v }

// f64 returns a pointer to v.
func f64(v float64) *float64 { return &v }

// pfx parses a prefix for expectations.
func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// pfxs parses prefixes for expectations.
func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = pfx(s)
	}
	return out
}

// addr parses an address for expectations.
func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// fieldsOf lists the Field of each error.
func fieldsOf(errs []FieldError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Field
	}
	return out
}

// meta builds expected metadata.
func meta(kind model.Kind, ns, name string) model.Meta { return key(kind, ns, name) }

// netipAddr shortens expectations.
type netipAddr = netip.Addr
