package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRepeatLimiter(t *testing.T) {
	type entry struct {
		at   time.Duration // since the start
		msg  string
		attr string // value of attribute k
	}
	tests := []struct {
		name string
		logs []entry
		want []string // "msg k=... [suppressed=N]" of each line written
	}{{
		name: "distinct messages all pass",
		logs: []entry{{0, "a", "1"}, {0, "b", "1"}, {0, "a", "2"}},
		want: []string{"a k=1", "b k=1", "a k=2"},
	}, {
		name: "repeats inside the interval are dropped and counted on the next line",
		logs: []entry{{0, "a", "1"}, {time.Second, "a", "1"}, {2 * time.Second, "a", "1"}, {11 * time.Second, "a", "1"}},
		want: []string{"a k=1", "a k=1 suppressed=2"},
	}, {
		name: "a repeat after the interval with nothing suppressed carries no count",
		logs: []entry{{0, "a", "1"}, {10 * time.Second, "a", "1"}},
		want: []string{"a k=1", "a k=1"},
	}, {
		name: "a count with no repeat after the interval is flushed when anything else is logged",
		logs: []entry{{0, "a", "1"}, {time.Second, "a", "1"}, {2 * time.Second, "a", "1"}, {5 * time.Second, "b", "1"}, {12 * time.Second, "b", "2"}},
		want: []string{"a k=1", "b k=1", "a k=1 suppressed=2", "b k=2"},
	}, {
		name: "the interval restarts at each line written",
		logs: []entry{{0, "a", "1"}, {10 * time.Second, "a", "1"}, {15 * time.Second, "a", "1"}, {21 * time.Second, "a", "1"}},
		want: []string{"a k=1", "a k=1", "a k=1 suppressed=1"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			now := start
			text := slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}})
			log := slog.New(newRepeatLimiter(text, 10*time.Second, func() time.Time { return now }))
			for _, e := range tc.logs {
				now = start.Add(e.at)
				log.Warn(e.msg, "k", e.attr)
			}
			var got []string
			for l := range strings.Lines(buf.String()) {
				got = append(got, strings.TrimPrefix(strings.TrimSpace(l), "msg="))
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("lines (-want +got):\n%s", d)
			}
		})
	}
}

func TestRepeatLimiterWithAttrsKeepsKeysApart(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	log := slog.New(newRepeatLimiter(slog.NewTextHandler(&buf, nil), time.Minute, func() time.Time { return now }))
	log.With("dataplane", "nftables").Error("sync failed")
	log.With("dataplane", "netlink").Error("sync failed")
	log.With("dataplane", "nftables").Error("sync failed")
	if n := strings.Count(buf.String(), "sync failed"); n != 2 {
		t.Fatalf("%d lines, want 2 (one per dataplane):\n%s", n, buf.String())
	}
}
