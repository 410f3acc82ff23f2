// Package selector is Calico's label-selector language for felis: parsing, canonical form,
// stable IDs (Calico's own parser, so accept/reject and evaluation agree with Felix), and
// Labels, an endpoint's effective label set with profile inheritance, interned for fast matching.
package selector
