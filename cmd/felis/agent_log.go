package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// repeatLimiter is a slog.Handler that logs a repeated record (same level, message and
// attributes) once per interval: repeats inside the interval are dropped and counted, and
// the next record logged for that key carries suppressed=N. A record's key ignores its
// time, so a failing datastore or dataplane retried every few seconds fills the log with
// one line per interval, not one per retry.
type repeatLimiter struct {
	next     slog.Handler
	interval time.Duration
	now      func() time.Time
	attrs    string // the rendered attributes added with WithAttrs/WithGroup
	state    *repeatState
}

// repeatState is shared by a limiter and the handlers derived from it.
type repeatState struct {
	mu   sync.Mutex
	seen map[string]*repeatEntry
}

type repeatEntry struct {
	last       time.Time // when the key was last logged
	suppressed int
}

// newRepeatLimiter wraps next; interval <= 0 disables limiting.
func newRepeatLimiter(next slog.Handler, interval time.Duration, now func() time.Time) slog.Handler {
	if interval <= 0 {
		return next
	}
	return &repeatLimiter{next: next, interval: interval, now: now, state: &repeatState{seen: map[string]*repeatEntry{}}}
}

func (h *repeatLimiter) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *repeatLimiter) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte('\x00')
	b.WriteString(r.Message)
	b.WriteByte('\x00')
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(a.String())
		b.WriteByte('\x00')
		return true
	})
	key := b.String()
	now := h.now()

	s := h.state
	s.mu.Lock()
	e, ok := s.seen[key]
	if ok && now.Sub(e.last) < h.interval {
		e.suppressed++
		s.mu.Unlock()
		return nil
	}
	suppressed := 0
	if ok {
		suppressed = e.suppressed
		e.last, e.suppressed = now, 0
	} else {
		if len(s.seen) >= 4096 {
			s.sweepLocked(now, h.interval)
		}
		s.seen[key] = &repeatEntry{last: now}
	}
	s.mu.Unlock()
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// sweepLocked forgets keys quiet for a whole interval (their suppressed counts, if any, are
// dropped), bounding memory when keys keep changing.
func (s *repeatState) sweepLocked(now time.Time, interval time.Duration) {
	for k, e := range s.seen {
		if now.Sub(e.last) >= interval {
			delete(s.seen, k)
		}
	}
}

func (h *repeatLimiter) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range attrs {
		b.WriteString(a.String())
		b.WriteByte('\x00')
	}
	c.attrs = b.String()
	return &c
}

func (h *repeatLimiter) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	c.attrs = h.attrs + "group:" + name + "\x00"
	return &c
}
