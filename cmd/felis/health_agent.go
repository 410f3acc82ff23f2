package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// health tracks what /liveness and /readiness report. Safe for concurrent use.
//
//   - live: the agent loop completed an iteration (a cycle, or an idle wake-up) within the
//     liveness timeout; a loop stuck in a kernel call or a deadlock fails it;
//   - ready: every datastore source is in sync, the datastore watch is running, and the
//     last sync of every dataplane succeeded.
type health struct {
	mu       sync.Mutex
	now      func() time.Time
	timeout  time.Duration
	lastLoop time.Time
	inSync   bool
	dsErr    string            // the datastore watch's failure ("" = watching)
	dpErr    map[string]string // dataplane -> error of its last sync ("" = succeeded)
}

func newHealth(timeout time.Duration, now func() time.Time, dataplanes []string) *health {
	h := &health{now: now, timeout: timeout, lastLoop: now(), dpErr: map[string]string{}}
	for _, dp := range dataplanes {
		h.dpErr[dp] = "not synced yet"
	}
	return h
}

// loopIteration records that the agent loop made progress.
func (h *health) loopIteration() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastLoop = h.now()
}

func (h *health) setInSync(in bool) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.inSync = in
}

// datastore records the datastore watch failing (err) or running again (nil).
func (h *health) datastore(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dsErr = ""
	if err != nil {
		h.dsErr = err.Error()
	}
}

// synced records the outcome of a dataplane's sync (nil error = success).
func (h *health) synced(dataplane string, err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.dpErr[dataplane] = err.Error()
	} else {
		h.dpErr[dataplane] = ""
	}
}

// live returns "" when live, else why not.
func (h *health) live() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if since := h.now().Sub(h.lastLoop); since > h.timeout {
		return fmt.Sprintf("agent loop has not completed an iteration for %s (limit %s)", since.Round(time.Millisecond), h.timeout)
	}
	return ""
}

// ready returns "" when ready, else every reason why not.
func (h *health) ready() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var why []string
	if !h.inSync {
		why = append(why, "datastore not in sync")
	}
	if h.dsErr != "" {
		why = append(why, "datastore unavailable: "+h.dsErr)
	}
	dps := make([]string, 0, len(h.dpErr))
	for dp := range h.dpErr {
		dps = append(dps, dp)
	}
	sort.Strings(dps)
	for _, dp := range dps {
		if e := h.dpErr[dp]; e != "" {
			why = append(why, fmt.Sprintf("dataplane %s: %s", dp, e))
		}
	}
	return strings.Join(why, "; ")
}

// healthHandler serves /liveness, /readiness (200 "ok", or 503 with the reason) and /status
// (the endpoint status report as JSON).
func healthHandler(h *health, book *statusBook) http.Handler {
	mux := http.NewServeMux()
	probe := func(check func() string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if why := check(); why != "" {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, why)
				return
			}
			fmt.Fprintln(w, "ok")
		}
	}
	mux.HandleFunc("GET /liveness", probe(h.live))
	mux.HandleFunc("GET /readiness", probe(h.ready))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(book.snapshot())
	})
	return mux
}
