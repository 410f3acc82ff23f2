package derive

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNodePortRanges(t *testing.T) {
	tests := []struct {
		in      any
		want    []NodePortRange
		wantErr bool
	}{
		{[]any{"30000:32767"}, []NodePortRange{{30000, 32767}}, false},
		{[]any{"30000-30010", 31000}, []NodePortRange{{30000, 30010}, {31000, 31000}}, false},
		{[]any{"32767:30000"}, nil, true},
		{[]any{"0:10"}, nil, true},
		{[]any{"x"}, nil, true},
		{"30000:32767", nil, true},
	}
	for _, tc := range tests {
		got, err := parseNodePortRanges(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%v: error %v, want error %t", tc.in, err, tc.wantErr)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%v: (-want +got)\n%s", tc.in, d)
		}
	}
}
