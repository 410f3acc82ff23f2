package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/felis-dev/felis/model"
	"github.com/felis-dev/felis/model/store"
)

// agentMetrics are the agent's Prometheus metrics, on a registry of their own (served at
// /metrics on --metrics-addr). A nil *agentMetrics records nothing.
type agentMetrics struct {
	reg               *prometheus.Registry
	deriveSeconds     prometheus.Histogram
	syncSeconds       *prometheus.HistogramVec
	opsApplied        *prometheus.CounterVec
	syncFailures      *prometheus.CounterVec
	fullResyncs       *prometheus.CounterVec
	driftRepaired     *prometheus.CounterVec
	changeToProgram   prometheus.Histogram
	invalidResources  prometheus.Gauge
	cycles            prometheus.Counter
	lastProgrammedRev prometheus.Gauge
}

// latencyBuckets span 100 µs to ~100 s: an incremental cycle takes milliseconds, a resync of
// a large table seconds.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 16)

// newAgentMetrics registers the agent's metrics, the store's object counts, and the Go and
// process collectors on a fresh registry.
func newAgentMetrics(st *store.Store) *agentMetrics {
	m := &agentMetrics{
		reg: prometheus.NewRegistry(),
		deriveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "felis_cycle_derive_seconds", Help: "Time to derive the node's snapshot, per cycle.", Buckets: latencyBuckets,
		}),
		syncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "felis_cycle_sync_seconds", Help: "Time one dataplane took to plan and apply, per cycle (a full sync includes reading the kernel).", Buckets: latencyBuckets,
		}, []string{"dataplane", "full"}),
		opsApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felis_ops_applied_total", Help: "Dataplane operations applied, by dataplane and kind.",
		}, []string{"dataplane", "kind"}),
		syncFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felis_sync_failures_total", Help: "Dataplane syncs that failed (the previous state stayed in place).",
		}, []string{"dataplane"}),
		fullResyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felis_full_resyncs_total", Help: "Syncs that re-read the kernel (start, periodic, after a failure).",
		}, []string{"dataplane"}),
		driftRepaired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "felis_drift_repaired_ops_total", Help: "Operations a periodic full sync applied after a clean incremental state: kernel drift repaired.",
		}, []string{"dataplane"}),
		changeToProgram: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "felis_change_to_programmed_seconds", Help: "From the first store change after the last cycle to the end of the sync that programmed it.", Buckets: latencyBuckets,
		}),
		invalidResources: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "felis_invalid_resources", Help: "Resources the datastore rejected as invalid and left out (see felis validate).",
		}),
		cycles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "felis_cycles_total", Help: "Agent cycles run (derive and sync of every dataplane).",
		}),
		lastProgrammedRev: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "felis_programmed_revision", Help: "The store revision the dataplanes last all programmed.",
		}),
	}
	m.reg.MustRegister(m.deriveSeconds, m.syncSeconds, m.opsApplied, m.syncFailures, m.fullResyncs,
		m.driftRepaired, m.changeToProgram, m.invalidResources, m.cycles, m.lastProgrammedRev,
		storeCollector{st: st, desc: prometheus.NewDesc("felis_store_objects", "Objects in the store, by kind.", []string{"kind"}, nil)},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *agentMetrics) observeDerive(d time.Duration) {
	if m != nil {
		m.deriveSeconds.Observe(d.Seconds())
		m.cycles.Inc()
	}
}

// observeSync records one successful sync: its time, its ops by kind, a full resync, and
// drift (ops of a full sync that an incremental one would not have needed).
func (m *agentMetrics) observeSync(dataplane string, d time.Duration, full bool, counts map[string]int, drift int) {
	if m == nil {
		return
	}
	fullText := "false"
	if full {
		fullText = "true"
		m.fullResyncs.WithLabelValues(dataplane).Inc()
	}
	m.syncSeconds.WithLabelValues(dataplane, fullText).Observe(d.Seconds())
	for kind, n := range counts {
		m.opsApplied.WithLabelValues(dataplane, kind).Add(float64(n))
	}
	if drift > 0 {
		m.driftRepaired.WithLabelValues(dataplane).Add(float64(drift))
	}
}

func (m *agentMetrics) syncFailed(dataplane string) {
	if m != nil {
		m.syncFailures.WithLabelValues(dataplane).Inc()
	}
}

func (m *agentMetrics) programmed(revision uint64, sinceChange time.Duration, measured bool) {
	if m == nil {
		return
	}
	m.lastProgrammedRev.Set(float64(revision))
	if measured {
		m.changeToProgram.Observe(sinceChange.Seconds())
	}
}

func (m *agentMetrics) setInvalid(n int) {
	if m != nil {
		m.invalidResources.Set(float64(n))
	}
}

// storeCollector counts the store's objects by kind at scrape time, from one view, so the
// cycle never pays for it.
type storeCollector struct {
	st   *store.Store
	desc *prometheus.Desc
}

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	v := c.st.View()
	for _, k := range model.Kinds {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v.Count(k)), string(k))
	}
}
