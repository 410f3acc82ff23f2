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
// the next record logged for that key carries suppressed=N. When no such record comes, the
// last suppressed one is logged with its count once its interval has passed (checked as
// other records arrive), so a count is never silently lost while the agent logs at all. A
// record's key ignores its time, so a failing datastore or dataplane retried every few
// seconds fills the log with one line per interval, not one per retry.
type repeatLimiter struct {
	next     slog.Handler
	interval time.Duration
	now      func() time.Time
	attrs    string // the rendered attributes added with WithAttrs/WithGroup
	state    *repeatState
}

// repeatState is shared by a limiter and the handlers derived from it.
type repeatState struct {
	mu        sync.Mutex
	seen      map[string]*repeatEntry
	lastFlush time.Time
}

type repeatEntry struct {
	last       time.Time // when the key was last logged
	suppressed int
	rec        slog.Record  // the last suppressed record
	next       slog.Handler // the handler it was bound for
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
	flush := s.dueLocked(now, h.interval, key)
	e, ok := s.seen[key]
	if ok && now.Sub(e.last) < h.interval {
		e.suppressed++
		e.rec, e.next = r.Clone(), h.next
		s.mu.Unlock()
		return h.emit(ctx, flush)
	}
	suppressed := 0
	if ok {
		suppressed = e.suppressed
		e.last, e.suppressed, e.rec, e.next = now, 0, slog.Record{}, nil
	} else {
		if len(s.seen) >= 4096 {
			// Keys that keep changing (an attribute with a counter in it) must not grow
			// the map without bound.
			s.sweepLocked(now, h.interval)
		}
		s.seen[key] = &repeatEntry{last: now}
	}
	s.mu.Unlock()
	if err := h.emit(ctx, flush); err != nil {
		return err
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", suppressed))
	}
	return h.next.Handle(ctx, r)
}

// dueLocked collects, at most once per interval, the suppressed records whose interval has
// passed (other than key's, which the caller handles) and resets their counts.
func (s *repeatState) dueLocked(now time.Time, interval time.Duration, key string) []*repeatEntry {
	if now.Sub(s.lastFlush) < interval {
		return nil
	}
	s.lastFlush = now
	var due []*repeatEntry
	for k, e := range s.seen {
		if k != key && e.suppressed > 0 && now.Sub(e.last) >= interval {
			due = append(due, &repeatEntry{suppressed: e.suppressed, rec: e.rec, next: e.next})
			e.last, e.suppressed, e.rec, e.next = now, 0, slog.Record{}, nil
		}
	}
	return due
}

// emit logs the flushed records with their suppressed counts.
func (h *repeatLimiter) emit(ctx context.Context, due []*repeatEntry) error {
	for _, e := range due {
		r := e.rec.Clone()
		r.AddAttrs(slog.Int("suppressed", e.suppressed))
		if err := e.next.Handle(ctx, r); err != nil {
			return err
		}
	}
	return nil
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
